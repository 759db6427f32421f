"""The running kata source on a host tree: writing the fixing drop-in resolves the exposure in the config
watcher's round, not in a later exposure round."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from diag import events as ev
from diag.common.paths import HostPaths
from diag.core.correlator import Correlator
from diag.sources import SOURCES, SourceContext
from diag.testing import Collector
from tests.unit.sources.test_kata_exposure_matrix import host

DROPIN = "usr/share/defaults/kata-containers/config.d/90-vfiowatch-vfio-cold-plug.toml"


def test_the_drop_in_resolves_the_exposure_in_the_config_watchers_round(tmp_path: Path) -> None:
    """Kata 3.8 (dpkg), no-port, a VF: #10162 opens at start; the drop-in's KataConfigLoaded and the facts
    that resolve it come in one round (one stamp), with the exposure round set to a minute."""
    root = host(tmp_path, "go38-noport", "vfs")
    src = SOURCES.load()["kata"](SourceContext(paths=HostPaths.at(root), options={
        "journal": False, "kmsg": False, "config_interval_s": 0.5, "exposure_interval_s": 60}))
    got = Collector()
    stop = threading.Event()
    th = threading.Thread(target=src.run, args=(got, stop))
    th.start()
    try:
        assert got.wait(lambda: bool(got.of(ev.KataFactsObserved)))
        c = Correlator()
        for e in got.snapshot():
            c.feed(e)
        (opened,) = [f for f in c.active if f.rule == "kata-vfio-exposure"]
        assert dict(opened.labels)["issue"] == "10162"
        seen = len(got.snapshot())
        target = root / DROPIN
        target.parent.mkdir(parents=True)
        # Kata reads every entry of config.d, so a careful tool writes beside it, then renames
        # into it (a .tmp inside config.d is itself a drop-in while it exists).
        tmp = target.parent.parent / (target.name + ".tmp")
        tmp.write_text('[hypervisor.qemu]\ncold_plug_vfio = "root-port"\npcie_root_port = 1\n')
        written = time.monotonic()
        os.replace(tmp, target)  # as an operator's tool writes it: whole, at once
        assert got.wait(lambda: len(got.of(ev.KataFactsObserved)) >= 2, timeout=10)
        latency = time.monotonic() - written
        resolved = []
        for e in got.snapshot()[seen:]:
            resolved += [f for f in c.feed(e) if f.rule == "kata-vfio-exposure"]
        (f,) = resolved
        assert f.status == "resolved" and f.finding_id == opened.finding_id
        assert f.resolved_reason.startswith(f"cold_plug_vfio is now 'root-port' (drop-in:/{DROPIN})")
        changed = [e for e in got.of(ev.KataConfigLoaded) if e.changed]
        assert changed and changed[0].ts_ns == got.of(ev.KataFactsObserved)[1].ts_ns
        assert latency < 60  # not the exposure round's (60 s); the config watcher's (printed)
        print(f"drop-in -> resolved: {latency:.3f} s (config_interval_s 0.5)")
    finally:
        stop.set()
        th.join(5)
    assert not th.is_alive()
