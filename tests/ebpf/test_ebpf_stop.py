"""The eBPF source obeys a stop while bcc is still compiling, and leaves no program loaded."""

from __future__ import annotations

import os
import threading
import time

import pytest

from diag.sources import SourceContext
from diag.sources.ebpf.source import EbpfSource
from diag.testing import Collector

pytestmark = pytest.mark.ebpf


def _bpf_fds() -> int:
    """Open eBPF program and map fds of this process."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:bpf"):
                n += 1
        except OSError:
            pass
    return n


def _loader() -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == "vfiowatch-ebpf-load"), None)


@pytest.mark.usefixtures("require_root")
def test_stop_during_compile_returns_at_once_and_nothing_stays_loaded() -> None:
    """A stop 0.2 s into start-up (bcc still compiling) ends run() well inside the agent's 2 s
    stop budget; the loader then closes what it built, so no program or map fd is left."""
    src = EbpfSource(SourceContext(options={"mode": os.environ.get("VFIOWATCH_EBPF_MODE", "auto")}))
    if not src.probe().ok:
        pytest.skip(f"ebpf unavailable here: {src.probe().reason}")
    before = _bpf_fds()
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(Collector(), stop), daemon=True)
    t.start()
    time.sleep(0.2)
    loader = _loader()
    assert loader is not None and loader.is_alive(), "bcc compiled in under 0.2 s: nothing to test"
    stop.set()
    t.join(2.0)
    assert not t.is_alive(), "run() ignored the stop while compiling"
    assert not src.ready.is_set()
    loader.join(120)
    assert not loader.is_alive()
    assert _bpf_fds() == before
