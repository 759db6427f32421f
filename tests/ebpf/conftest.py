"""Shared fixtures of the eBPF tier: a running `ebpf` source, a fake Kata shim, a cgroup v2."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diag.sources import SourceContext
from diag.sources.ebpf.source import EbpfSource
from diag.testing import Collector
from tests.ebpf.vw_ebpf_helpers import cgroup2_mount


@pytest.fixture(scope="module")
def ebpf_source(require_root: None) -> Iterator[tuple[EbpfSource, Collector]]:
    """The `ebpf` source running in this process (mode from VFIOWATCH_EBPF_MODE, default auto).
    In tracepoint mode it runs the `complete` variant: these tests check every write's value
    and errno, which only that variant (and kprobe mode) sees; test_ebpf_open_only.py covers the
    default `open-only` variant."""
    src = EbpfSource(SourceContext(options={"mode": os.environ.get("VFIOWATCH_EBPF_MODE", "auto"),
                                            "tracepoint_variant": "complete"}))
    avail = src.probe()
    if not avail.ok:
        pytest.skip(f"ebpf unavailable here: {avail.reason} ({avail.hint})")
    got = Collector()
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            src.run(got, stop)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    t = threading.Thread(target=run, name="ebpf-source", daemon=True)
    t.start()
    assert src.ready.wait(120) or not errors, errors
    assert not errors, errors
    yield src, got
    stop.set()
    t.join(10)


@pytest.fixture
def test_cgroup() -> Iterator[Path]:
    """A cgroup v2 directory for the writers, removed afterwards."""
    d = cgroup2_mount() / f"vfiowatch-test-{os.getpid()}"
    d.mkdir(exist_ok=True)
    yield d
    for _ in range(50):
        try:
            d.rmdir()
            return
        except OSError:
            time.sleep(0.1)


@pytest.fixture
def shim_exe(tmp_path: Path) -> Path:
    """A real executable file named containerd-shim-kata-v2 (a copy of the system shell)."""
    sh = shutil.which("dash") or os.path.realpath("/bin/sh")
    exe = tmp_path / "containerd-shim-kata-v2"
    shutil.copy2(sh, exe)
    return exe
