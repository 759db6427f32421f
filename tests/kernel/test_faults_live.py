"""Fault injection ([faults]) on a real agent: half the uevents dropped, journal writes failing,
the uevent source crashed; it keeps running, says each in-band, and ends equal to sysfs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.core.correlator import Correlator
from diag.runtime.playback import load_journal
from diag.sources import sysfs
from tests.agentlog import AgentLog
from tests.conftest import bind_mounts, vfiowatch_bin

pytestmark = pytest.mark.usefixtures("require_root")

PCI = Path("/sys/bus/pci/devices")
SEQNUM = Path("/sys/kernel/uevent_seqnum")


def _device() -> tuple[str, str]:
    """A real PCI device with a driver (synthetic uevents for it are safe) and that driver."""
    for d in sorted(PCI.iterdir()):
        if (d / "driver").exists():
            return d.name, os.path.basename(os.readlink(d / "driver"))
    pytest.skip("no PCI device with a driver here")


def _root(tmp: Path, bdf: str, driver: str) -> Path:
    """A --root whose sysfs holds `bdf` bound to `driver`, plus the kernel's uevent_seqnum."""
    root = tmp / "root"
    dev = root / f"sys/devices/pci0000:00/{bdf}"
    dev.mkdir(parents=True)
    (root / f"sys/bus/pci/drivers/{driver}").mkdir(parents=True)
    for name in ("vendor", "device", "class"):
        shutil.copy(PCI / bdf / name, dev / name)
    os.symlink(f"../../../bus/pci/drivers/{driver}", dev / "driver")
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink(f"../../../devices/pci0000:00/{bdf}", root / f"sys/bus/pci/devices/{bdf}")
    (root / "sys/kernel").mkdir()
    (root / "sys/kernel/uevent_seqnum").write_text("0\n")  # the real one is mounted over it
    return root


class _Run:
    def __init__(self, tmp: Path, root: Path, config: Path) -> None:
        self.out = tmp / "agent.log"
        self.journal = tmp / "j" / "journal.jsonl"
        self.journal.parent.mkdir(exist_ok=True)  # run creates only the default's directory
        self._fh = open(self.out, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [vfiowatch_bin(), "--root", str(root), "run", "--log-events", "--journal",
             str(self.journal), "--config", str(config), "--sources", "uevent"],
            stdout=self._fh, stderr=subprocess.STDOUT)
        self.log = AgentLog(self.out, self.proc)

    def lines(self) -> list[dict[str, Any]]:
        return self.log.lines()

    def wait(self, pred: Any, timeout: float = 30) -> list[dict[str, Any]]:
        return self.log.matching(pred, timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._fh.close()


def _uevent_states(run: _Run) -> list[dict[str, Any]]:
    return [d for d in run.lines()
            if d["event"] == "source_state_changed" and d.get("source") == "uevent"]


def test_injected_faults_are_survived_told_in_band_and_the_state_ends_equal_to_sysfs(
        tmp_path: Path) -> None:
    """[faults] uevent_drop_percent = 50, journal_fail_writes = 2 (after 3), crash_source =
    uevent after 1 s, on `vfiowatch --root R run`: the uevent source crashes (logged with the
    injected reason) and comes back; the journal fails with EIO, drops and counts, then resumes
    with EventsLost(journal, that count) and the state restated; R's device is then unbound
    behind the agent's back and 10 real uevents follow, half dropped: EventsLost(uevent) counts
    at least those 5 from SEQNUM gaps, a resync finds the unbind, and the journal, replayed,
    ends with the drivers sysfs has. SIGTERM then exits 0."""
    bdf, driver = _device()
    root = _root(tmp_path, bdf, driver)
    config = tmp_path / "faults.toml"
    config.write_text("[faults]\nuevent_drop_percent = 50\njournal_fail_writes = 2\n"
                      "journal_fail_after = 3\ncrash_source = \"uevent\"\ncrash_after_s = 1.0\n")
    with bind_mounts((SEQNUM, root / "sys/kernel/uevent_seqnum")):
        run = _Run(tmp_path, root, config)
        try:
            (warn,) = run.wait(lambda d: d["event"] == "faults_injected")
            assert warn["level"] == "warning" and warn["uevent_drop_percent"] == 50.0
            run.wait(lambda d: d["event"] == "source_state_changed" and d.get("source") == "uevent"
                     and "InjectedFault" in str(d.get("reason")))
            run.wait(lambda d: len([s for s in _uevent_states(run) if s["up"]]) >= 2)
            run.wait(lambda d: d["event"] == "journal_write_resumed")
            time.sleep(0.3)  # the restarted source has its inventory
            os.unlink(root / f"sys/devices/pci0000:00/{bdf}/driver")  # unbound while blind
            fd = os.open(PCI / bdf / "uevent", os.O_WRONLY)
            try:
                for _ in range(10):
                    os.pwrite(fd, f"change {uuid.uuid4()}".encode(), 0)
            finally:
                os.close(fd)
            run.wait(lambda d: d["event"] == "resynced")
            time.sleep(1.5)  # the journal flushes each second
        finally:
            rc = run.stop()
    assert rc == 0, run.out.read_text()[-3000:]
    ups = [s["up"] for s in _uevent_states(run)]
    assert ups[:4] == [True, False, True, False] or ups[:3] == [True, False, True], ups
    events, _, stats = load_journal(run.journal)
    assert stats.bad_lines == 0
    journal_lost = [e for e in events if isinstance(e, ev.EventsLost) and e.lost_source == "journal"]
    assert len(journal_lost) == 1 and "EIO" in journal_lost[0].reason and journal_lost[0].count
    (failed,) = [d for d in run.lines() if d["event"] == "journal_write_failed"]
    (resumed,) = [d for d in run.lines() if d["event"] == "journal_write_resumed"]
    assert failed["errno"] == "EIO" and resumed["dropped"] == journal_lost[0].count
    uevent_lost = [e for e in events if isinstance(e, ev.EventsLost) and e.lost_source == "uevent"]
    assert sum(e.count or 0 for e in uevent_lost) >= 5, uevent_lost
    assert all("injected drop" in e.reason for e in uevent_lost)
    logged = [d for d in run.lines() if d["event"] == "events_lost" and d["source"] == "uevent"]
    assert sum(d["count"] for d in logged) == sum(e.count or 0 for e in uevent_lost)
    (res,) = [e for e in events if isinstance(e, ev.Resynced) and e.changes]
    assert res.resynced_source == "uevent"
    core = Correlator(rules=[])
    for e in events:
        core.feed(e)
    truth = {d.bdf: d.driver for d in sysfs.scan(HostPaths.at(root))}
    assert truth == {bdf: None}
    assert {d.bdf: d.driver for d in core.snapshot().devices} == truth
