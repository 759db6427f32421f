"""The journal sink: self-contained parts, rotation with gzip, reopen, and disk-full recovery."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from diag import codec
from diag import events as ev
from diag.core.correlator import Correlator
from diag.sinks import journal as journal_mod
from diag.sinks.journal import JournalSink, journal_records, state_records

T0 = 1_795_791_194_000_000_000
PF = "0000:01:00.0"


def _inventory() -> ev.InventoryObserved:
    return ev.InventoryObserved(ts_ns=T0, source="sysfs", devices=(
        ev.PciDevice(bdf=PF, role="pf", driver="igb", vfs=("0000:01:10.0", "0000:01:10.2")),
        ev.PciDevice(bdf="0000:01:10.0", role="vf", pf=PF, vf_index=0, driver="igbvf"),
        ev.PciDevice(bdf="0000:01:10.2", role="vf", pf=PF, vf_index=1, driver="igbvf"),
    ))


def _moves(n: int, start: int = 1) -> list[ev.Event]:
    out: list[ev.Event] = []
    for i in range(start, start + n):
        bdf = "0000:01:10.0" if i % 2 else "0000:01:10.2"
        drv = "vfio-pci" if (i // 2) % 2 else "igbvf"
        out.append(ev.DeviceBound(ts_ns=T0 + i * 1000, source="uevent", bdf=bdf, driver=drv))
    return out


class Agent:
    """A correlator feeding a journal the way the pipeline does (core, then sinks)."""

    def __init__(self, path: Path, **kw: Any) -> None:
        self.core = Correlator(rules=[])
        self.reports: list[tuple[str, str, dict[str, Any]]] = []
        self.sink = JournalSink(path, state=self.core.snapshot,
                                report=lambda lvl, e, **f: self.reports.append((lvl, e, f)), **kw)

    def feed(self, events: list[ev.Event]) -> None:
        for e in events:
            findings = self.core.feed(e)
            self.sink.write(e)
            for f in findings:
                self.sink.write(f)


def _replay(path: Path) -> tuple[Correlator, list[Any], codec.ReadStats]:
    recs, st = journal_records(path)
    c = Correlator(rules=[])
    for r in recs:
        if isinstance(r, ev.Event):
            c.feed(r)
    return c, recs, st


def _drivers(c: Correlator) -> dict[str, str | None]:
    return {d.bdf: d.driver for d in c.snapshot().devices}


def test_a_new_journal_starts_with_a_header_and_logs_every_record(tmp_path: Path) -> None:
    """Header (schema, host, kernel, boot id) first, then the events in order; replay matches."""
    a = Agent(tmp_path / "j.jsonl")
    a.feed([_inventory(), *_moves(5)])
    a.sink.close()
    c, recs, st = _replay(tmp_path / "j.jsonl")
    hdr = recs[0]
    assert isinstance(hdr, codec.Header) and hdr.schema == codec.SCHEMA_VERSION
    assert hdr.hostname and hdr.kernel == os.uname().release and hdr.part == 0
    assert [r.kind for r in recs[1:]] == ["inventory_observed"] + ["device_bound"] * 5
    assert st.bad_lines == 0 and not st.truncated_tail
    assert _drivers(c) == _drivers(a.core)


def test_every_rotated_part_replays_on_its_own(tmp_path: Path) -> None:
    """At max_bytes the file is rotated and gzipped; each part opens with header + state."""
    path = tmp_path / "j.jsonl"
    a = Agent(path, max_bytes=4096, keep=100)
    a.feed([_inventory()])
    for i in range(0, 200, 10):
        a.feed(_moves(10, start=i + 1))
    a.sink.close()
    parts = sorted(tmp_path.glob("j.jsonl.*.gz"))
    assert len(parts) >= 3 and not list(tmp_path.glob("j.jsonl.??????"))
    part_numbers = []
    for p in [*parts, path]:
        recs, st = journal_records(p)
        assert st.bad_lines == 0 and not st.truncated_tail
        hdr = recs[0]
        assert isinstance(hdr, codec.Header)
        part_numbers.append(hdr.part)
        assert hdr.snapshot_records >= 1 or hdr.part == 0
        if hdr.part:
            assert recs[1].kind == "inventory_observed"
    assert part_numbers == sorted(part_numbers) and part_numbers[0] == 0
    c, _, _ = _replay(path)  # the live part alone gives today's drivers
    assert _drivers(c) == _drivers(a.core)


def test_only_the_newest_parts_are_kept(tmp_path: Path) -> None:
    """keep=2 leaves two compressed parts however many rotations happened."""
    a = Agent(tmp_path / "j.jsonl", max_bytes=4096, keep=2)
    a.feed([_inventory()])
    for i in range(0, 300, 10):
        a.feed(_moves(10, start=i + 1))
    a.sink.close()
    assert a.sink.stats.rotations >= 4
    assert len(list(tmp_path.glob("j.jsonl.*.gz"))) == 2


def test_an_earlier_runs_file_is_kept_as_a_part(tmp_path: Path) -> None:
    """Starting on an existing journal rotates it away; the new file starts afresh."""
    a = Agent(tmp_path / "j.jsonl")
    a.feed([_inventory(), *_moves(3)])
    a.sink.close()
    b = Agent(tmp_path / "j.jsonl")
    b.sink.close()
    assert len(list(tmp_path.glob("j.jsonl.000001.gz"))) == 1
    recs, _ = journal_records(tmp_path / "j.jsonl")
    assert len(recs) == 1 and isinstance(recs[0], codec.Header)


def test_reopen_after_logrotate_moved_the_file_starts_a_new_self_contained_file(tmp_path: Path) -> None:
    """SIGHUP after a rename: the next write opens a new file with header and state snapshot."""
    path = tmp_path / "j.jsonl"
    a = Agent(path)
    a.feed([_inventory(), *_moves(2)])
    os.rename(path, tmp_path / "moved.jsonl")
    a.sink.reopen()
    a.feed(_moves(2, start=3))
    a.sink.close()
    recs, _ = journal_records(path)
    assert isinstance(recs[0], codec.Header) and recs[0].part == 1
    assert recs[1].kind == "inventory_observed"
    assert [r.kind for r in recs[-2:]] == ["device_bound", "device_bound"]
    c, _, _ = _replay(path)
    assert _drivers(c) == _drivers(a.core)
    assert ("info", "journal_reopened") in [(lvl, e) for lvl, e, _ in a.reports]


def test_disk_full_drops_and_counts_then_resumes_with_an_in_band_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC: keep running, report once, count drops; when space returns, a note and the state."""
    path = tmp_path / "j.jsonl"
    a = Agent(path, retry_interval_s=0.0)
    a.feed([_inventory()])
    real_write = os.write
    full = {"on": True}

    def write(fd: int, data: bytes) -> int:
        # The kernel takes what fits, then the next write fails: a half line is written.
        if full["on"] and len(data) > 10 and fd == a.sink._fd:
            real_write(fd, data[:10])
            return 10
        return real_write(fd, data)

    monkeypatch.setattr(journal_mod.os, "write", write)
    a.feed(_moves(5))
    assert a.sink.stats.records_dropped == 5 and not a.sink.stats.writable
    assert [e for _, e, _ in a.reports].count("journal_write_failed") == 1
    full["on"] = False
    a.feed(_moves(2, start=6))
    a.sink.close()
    assert a.sink.stats.writable
    assert ("info", "journal_write_resumed") in [(lvl, e) for lvl, e, _ in a.reports]
    c, recs, st = _replay(path)
    assert st.bad_lines == 0 and not st.truncated_tail  # the half lines were taken back
    lost = [r for r in recs if isinstance(r, ev.EventsLost)]
    assert len(lost) == 1 and lost[0].lost_source == "journal" and lost[0].count == 5
    assert "ENOSPC" in lost[0].reason
    after = recs[recs.index(lost[0]) + 1]
    assert after.kind == "inventory_observed"  # the state is restated after the gap
    assert _drivers(c) == _drivers(a.core)


def test_a_failed_open_is_retried(tmp_path: Path) -> None:
    """A journal whose directory vanished comes back once it can be created again."""
    d = tmp_path / "d"
    a = Agent(d / "j.jsonl", retry_interval_s=0.0)
    os.unlink(d / "j.jsonl")
    os.unlink(d / "j.jsonl.lock")  # the whole directory is gone (rm -rf)
    a.sink._close_fd()
    os.rmdir(d)
    a.feed(_moves(1))
    assert not a.sink.stats.writable and a.sink.stats.write_errors.get("ENOENT")
    d.mkdir()
    a.feed(_moves(1, start=2))
    a.sink.close()
    recs, _ = journal_records(d / "j.jsonl")
    assert isinstance(recs[0], codec.Header)
    assert any(isinstance(r, ev.EventsLost) and r.lost_source == "journal" for r in recs)


def test_a_cut_last_line_is_reported_not_raised(tmp_path: Path) -> None:
    """A power cut mid-line: the replay counts a truncated tail and keeps everything before it."""
    path = tmp_path / "j.jsonl"
    a = Agent(path)
    a.feed([_inventory(), *_moves(4)])
    a.sink.close()
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    recs, st = journal_records(path)
    assert st.truncated_tail and st.bad_lines == 0
    assert len(recs) == 1 + 1 + 3


def test_state_records_restate_links_sandboxes_configs_and_findings() -> None:
    """The opening snapshot holds every kind of state the core keeps."""
    c = Correlator(rules=[])
    ns = ev.NetnsRef(inode=42, name="pod-ns")
    c.feed(_inventory())
    c.feed(ev.NetnsAdded(ts_ns=T0, source="links", netns=ns))
    c.feed(ev.LinkChanged(ts_ns=T0, source="links", ifindex=7, ifname="eth1", netns=ns,
                          operstate="UP"))
    c.feed(ev.KataConfigLoaded(ts_ns=T0, source="kata", config=ev.KataConfig(handler="kata")))
    c.feed(ev.SandboxStarted(ts_ns=T0, source="kata", sandbox_id="sb1", pod="web-0"))
    c.feed(ev.SourceStateChanged(ts_ns=T0, source="runtime", name="uevent", up=True))
    kinds = [r.kind for r in state_records(c.snapshot(), T0 + 1)]
    for kind in ("inventory_observed", "netns_added", "link_changed", "kata_config_loaded",
                 "sandbox_started", "source_state_changed"):
        assert kind in kinds
    again = Correlator(rules=[])
    for r in state_records(c.snapshot(), T0 + 1):
        again.feed(r)
    s1, s2 = c.snapshot(), again.snapshot()
    assert [(d.bdf, d.driver) for d in s1.devices] == [(d.bdf, d.driver) for d in s2.devices]
    assert [(lk.ifname, lk.operstate) for lk in s1.links] == [(lk.ifname, lk.operstate) for lk in s2.links]
    assert [s.sandbox_id for s in s1.sandboxes] == [s.sandbox_id for s in s2.sandboxes]


def test_write_errors_are_named_by_errno(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO closes the file and is counted under its errno name for the metrics."""
    a = Agent(tmp_path / "j.jsonl", retry_interval_s=0.0)

    def write(fd: int, data: bytes) -> int:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(journal_mod.os, "write", write)
    a.feed(_moves(1))
    assert a.sink.stats.write_errors == {"EIO": 1} and a.sink._fd is None
    monkeypatch.undo()
    time.sleep(0.01)
    a.feed(_moves(1, start=2))
    a.sink.close()
    assert a.sink.stats.writable


def test_fdatasync_runs_off_the_core_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flush() hands the file to the syncer thread; a slow disk does not block the writer."""
    import threading

    threads: list[str] = []
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        threads.append(threading.current_thread().name)
        time.sleep(0.2)
        real(fd)

    monkeypatch.setattr(journal_mod.os, "fdatasync", slow_sync)
    a = Agent(tmp_path / "j.jsonl", fsync_interval_s=5.0)
    a.feed(_moves(3))
    t0 = time.monotonic()
    a.sink.flush()
    a.feed(_moves(3, start=4))
    assert time.monotonic() - t0 < 0.1
    end = time.monotonic() + 5
    while not a.sink.stats.syncs and time.monotonic() < end:
        time.sleep(0.01)
    a.sink.close()
    assert a.sink.stats.syncs >= 1 and set(threads) == {"vfiowatch-fsync"}


def test_unsynced_writes_are_synced_within_the_interval_and_the_syncer_sleeps_when_clean(
        tmp_path: Path) -> None:
    """With no flush, a write is fdatasync'ed by the syncer's own timer (0.1 s here); with
    everything synced the syncer thread does not wake (it waited 0.1 s at a time before)."""
    a = Agent(tmp_path / "j.jsonl", fsync_interval_s=0.1)
    syncer = a.sink._syncer
    assert syncer.native_id is not None
    status = Path(f"/proc/self/task/{syncer.native_id}/status")

    def switches() -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith("voluntary_ctxt_switches"))
        return int(line.split()[1])

    try:
        a.feed(_moves(3))
        end = time.monotonic() + 5
        while a.sink.stats.syncs < 1 and time.monotonic() < end:
            time.sleep(0.01)
        assert a.sink.stats.syncs >= 1
        time.sleep(0.3)  # the timer that found nothing more to sync has run out
        before = switches()
        time.sleep(1.0)
        assert switches() == before
        a.feed(_moves(3, start=4))
        synced = a.sink.stats.syncs
        end = time.monotonic() + 5
        while a.sink.stats.syncs == synced and time.monotonic() < end:
            time.sleep(0.01)
        assert a.sink.stats.syncs > synced
    finally:
        a.sink.close()


def test_a_second_writer_is_refused_before_it_touches_anything(tmp_path: Path) -> None:
    """While a sink holds the journal, another one (here in the same process: flock is per open
    file) raises JournalInUse naming the holder's pid, and the journal directory is unchanged;
    once the first is closed, the lock is free."""
    path = tmp_path / "j.jsonl"
    a = Agent(path)
    a.feed([_inventory(), *_moves(3)])
    a.sink.flush()
    before = {p.name: p.stat().st_ino for p in tmp_path.iterdir()}
    with pytest.raises(journal_mod.JournalInUse) as info:
        JournalSink(path)
    assert f"(pid {os.getpid()}, started " in info.value.message and info.value.hint
    assert {p.name: p.stat().st_ino for p in tmp_path.iterdir()} == before
    a.sink.close()
    b = JournalSink(path)  # the earlier run's file is rotated away, as before
    b.close()
    assert (tmp_path / "j.jsonl.lock").read_text().split("\n")[0] == str(os.getpid())


def test_postmortem_reads_a_journal_being_written_and_leaves_the_lock_out(tmp_path: Path) -> None:
    """Readers take no lock: postmortem of the directory of a journal whose writer still holds
    it reads the journal, and does not list the lock file as an unrecognised input."""
    import subprocess

    from tests.conftest import vfiowatch_bin

    a = Agent(tmp_path / "j.jsonl")
    a.feed([_inventory(), *_moves(3)])
    a.sink.flush()
    res = subprocess.run([vfiowatch_bin(), "postmortem", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    a.sink.close()
    assert res.returncode in (0, 1), res.stderr  # 1: findings; 2 would be an unreadable input
    assert "j.jsonl  [journal]" in res.stdout and ".lock" not in res.stdout


def test_a_part_restates_each_kata_handlers_facts_so_it_replays_the_exposure_alone() -> None:
    """The opening snapshot holds KataFactsObserved per handler: replayed alone, a rotated part gives the same
    exposure (model and finding) as the agent had."""
    c = Correlator()
    vf = ev.VfCandidate(bdf="0000:01:10.2", pf=PF, driver="igbvf")
    c.feed(ev.KataFactsObserved(ts_ns=T0, source="kata",
                                facts=ev.KataHandlerFacts(handler="kata", version="3.8.0", vfs=(vf,))))
    recs = state_records(c.snapshot(), T0 + 1)
    assert [r.facts.handler for r in recs if isinstance(r, ev.KataFactsObserved)] == ["kata"]
    again = Correlator()
    for r in recs:
        again.feed(codec.loads(codec.dumps(r)))
    assert again.snapshot().kata_exposure == c.snapshot().kata_exposure
    assert [f.summary for f in again.active if f.rule == "kata-vfio-exposure"] == \
        [f.summary for f in c.active if f.rule == "kata-vfio-exposure"]


def test_each_write_errno_gets_its_own_fix() -> None:
    """ENOSPC says free space, EROFS read-only, EACCES permissions, EDQUOT the quota, EIO the
    disk; none but ENOSPC/EDQUOT tells the operator to free space."""
    import errno

    words = {errno.ENOSPC: "free space", errno.EROFS: "read-only", errno.EACCES: "write access",
             errno.EDQUOT: "quota", errno.EIO: "I/O error", errno.EFBIG: "--journal-max-bytes"}
    for code, word in words.items():
        hint = journal_mod.errno_hint(code)
        assert word in hint and hint.endswith("resumes by itself")
        if code not in (errno.ENOSPC, errno.EDQUOT):
            assert "free space" not in hint
    assert "check the journal's path" in journal_mod.errno_hint(errno.ENXIO)
