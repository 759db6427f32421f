"""`--root` confines every read: each command and source on a hostile tree reads nothing outside it.

The tree (tests/hostile_root.py) has absolute and `../` links escaping at every level a reader
walks; everything outside holds a canary string, and an inotify watch sees any open or read
of anything outside by any process. Each test asserts three things: the canary never shows,
nothing outside is touched, and the refusal is reported where the user looks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from diag import cli
from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources import SourceContext
from tests.hostile_root import (
    ABS_DEV,
    CANARY,
    ESCAPED_PID,
    PF,
    REL_DEV,
    SHIM_PID,
    VF,
    Hostile,
    OutsideWatch,
    build,
    texts_under,
)


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[Hostile, OutsideWatch]]:
    h = build(tmp_path)
    w = OutsideWatch(h.outside)
    yield h, w
    w.close()


def _clean(text: str, watch: OutsideWatch) -> None:
    assert CANARY not in text
    assert watch.touched() == []


def test_snapshot_json_reads_nothing_outside_and_names_each_refusal(
        hostile: tuple[Hostile, OutsideWatch], capsys: pytest.CaptureFixture[str]) -> None:
    """snapshot --format json: no outside content; every escaping link is a refusal in the
    device's errors, and the whole list is in `refused`."""
    h, watch = hostile
    assert cli.main(["--root", str(h.root), "snapshot", "--format", "json"]) == 0
    cap = capsys.readouterr()
    _clean(cap.out + cap.err, watch)
    doc = json.loads(cap.out)
    devs = {d["bdf"]: d for d in doc["devices"]}
    errors = {bdf: " ".join(d["errors"]) for bdf, d in devs.items()}
    for bdf in (ABS_DEV, REL_DEV):
        assert "refused" in errors[bdf] and devs[bdf]["vendor"] == ""
    for name in ("driver_override", "iommu_group", "net", "virtfn1"):
        assert f"{name}: refused" in errors[PF], errors[PF]
    for name in ("physfn", "driver", "driver_override", "iommu_group", "net", "vendor"):
        assert f"{name}: refused" in errors[VF], errors[VF]
    assert devs[PF]["driver"] == "igb" and devs[PF]["vfs"] == [VF] and devs[VF]["driver"] is None
    assert any("pci.ids" in r for r in doc["refused"])


def test_snapshot_table_reads_nothing_outside_and_shows_refusals(
        hostile: tuple[Hostile, OutsideWatch], capsys: pytest.CaptureFixture[str]) -> None:
    """The table shows each device's refusals under its row and the total at the end."""
    h, watch = hostile
    assert cli.main(["--root", str(h.root), "snapshot"]) == 0
    cap = capsys.readouterr()
    _clean(cap.out + cap.err, watch)
    assert "driver_override: refused" in cap.out
    assert "paths refused: they lead outside --root" in cap.out


def test_check_reads_nothing_outside_and_says_what_it_refused(
        hostile: tuple[Hostile, OutsideWatch], capsys: pytest.CaptureFixture[str]) -> None:
    """check (text and json): a `root confinement` line lists the refused paths."""
    h, watch = hostile
    cli.main(["--root", str(h.root), "check"])
    text = capsys.readouterr()
    cli.main(["--root", str(h.root), "check", "--format", "json"])
    js = capsys.readouterr()
    _clean(text.out + text.err + js.out + js.err, watch)
    assert "root confinement" in text.out and "refused" in text.out
    line = next(c for c in json.loads(js.out)["checks"] if c["name"] == "root confinement")
    assert line["status"] == "warn" and "lib/modules" in line["detail"]


def test_record_sysfs_copies_nothing_from_outside(
        hostile: tuple[Hostile, OutsideWatch], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """record sysfs: the copy holds no outside name, link or content; the refusals are printed."""
    h, watch = hostile
    out = tmp_path / "rec"
    assert cli.main(["--root", str(h.root), "record", "sysfs", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    _clean(cap.out + cap.err + texts_under(out), watch)
    assert "refused" in cap.err and "iommu_group" in cap.err
    for dirpath, _dirs, files in os.walk(out):
        for name in files:  # every link in the copy stays inside it
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                assert os.path.realpath(p).startswith(str(out.resolve()) + "/"), p


def test_the_recorded_copy_of_the_hostile_tree_scans_like_the_tree(
        hostile: tuple[Hostile, OutsideWatch], tmp_path: Path) -> None:
    """What the scanner could read, the recorder copied: the legitimate PF and VF scan the same."""
    from diag.commands.record import record_sysfs
    from diag.sources import sysfs

    h, watch = hostile
    record_sysfs(HostPaths.at(h.root), tmp_path / "rec")
    a = {d.bdf: d for d in sysfs.scan(HostPaths.at(h.root), names=False)}
    b = {d.bdf: d for d in sysfs.scan(HostPaths.at(tmp_path / "rec"), names=False)}
    for bdf in (PF, VF):
        assert (a[bdf].vendor, a[bdf].driver, a[bdf].vfs, a[bdf].role) == (
            b[bdf].vendor, b[bdf].driver, b[bdf].vfs, b[bdf].role)
    _clean(repr(a) + repr(b), watch)


def test_kata_source_reads_nothing_outside_and_reports_refusals(
        hostile: tuple[Hostile, OutsideWatch]) -> None:
    """Kata discovery (containerd imports, main files, config.d), state files and shim processes:
    no outside content; each refusal is an in-band DecodeFailed naming the path."""
    from diag.sources.kata.source import KataWatcher

    h, watch = hostile
    w = KataWatcher(HostPaths.at(h.root), {"journal": False})
    w.start_journal()
    events = w.step(1_000, force=True)
    w.close()
    _clean(repr(events), watch)
    assert w.kmsg is None
    refused = " ".join(e.reason for e in events if isinstance(e, ev.DecodeFailed) and "refused" in e.reason)
    for where in ("/etc/containerd/conf.d/20-rel.toml", "/etc/kata-containers/rel/configuration.toml",
                  "/run/vc/sbs/sb-rel", f"/proc/{SHIM_PID}/cmdline", f"/proc/{ESCAPED_PID}", "/dev/kmsg"):
        assert where in refused, where
    assert w.decode_failures >= 6


def test_proc_readers_read_nothing_outside(hostile: tuple[Hostile, OutsideWatch]) -> None:
    """read_process, read_environ, netns_inode on escaping /proc entries: nothing from outside,
    and a process's netns link to the host's namespace is not the host's namespace."""
    from diag.sources import proc

    h, watch = hostile
    paths = HostPaths.at(h.root)
    got = [proc.read_process(paths, SHIM_PID), proc.read_process(paths, ESCAPED_PID),
           proc.read_environ(paths, SHIM_PID), proc.read_argv(paths, SHIM_PID)]
    _clean(repr(got), watch)
    assert proc.netns_inode(paths, SHIM_PID) != os.stat("/proc/self/ns/net").st_ino
    assert len(paths.refusals.all()) >= 3


def test_netns_discovery_finds_no_namespace_outside_the_root(hostile: tuple[Hostile, OutsideWatch]) -> None:
    """/run/netns entries and /proc/<pid>/ns/net links that point at the agent's own namespace
    or an outside file are not namespaces of the tree."""
    from diag.sources.netns import scan_netns

    h, watch = hostile
    paths = HostPaths.at(h.root)
    found = scan_netns(paths)
    outside = {os.stat("/proc/self/ns/net").st_ino, os.stat(h.outside / "nsfile").st_ino}
    assert not outside & set(found), found
    assert any("/run/netns/rel" in r for r in paths.refusals.all())
    _clean(repr(found), watch)


def test_ebpf_source_path_reads_stay_inside(hostile: tuple[Hostile, OutsideWatch]) -> None:
    """The eBPF source's read-back, path naming, cgroup walk and process identity stay inside."""
    from diag.sources.ebpf import decode as D
    from diag.sources.ebpf import layouts as L
    from diag.sources.ebpf.source import EbpfSource

    h, watch = hostile
    paths = HostPaths.at(h.root)
    src = EbpfSource(SourceContext(paths=paths, options={"tracepoint_variant": "open-only"}))
    out: list[ev.Event] = []
    src._emit = out.append
    for bdf in (PF, VF):
        e = ev.SysfsWriteObserved(ts_ns=1, source="ebpf", actor=ev.Process(pid=1),
                                  path=f"/sys/bus/pci/devices/{bdf}/driver_override",
                                  control="driver_override", value="", stage="open", result=3)
        src._delayed.append((0.0, e))
    src._flush_delayed(float("inf"))
    named = [src._realpath(f"/sys/bus/pci/devices/{b}/driver_override") for b in (ABS_DEV, REL_DEV)]
    cg = src._cgroup_path(12345)
    who = src.identify(D.RawRecord(ts_ns=1, cgroup_id=99, result=0, kind=L.VFW_KIND_OPEN, control=0,
                                   pid=ESCAPED_PID, tid=ESCAPED_PID, ppid=SHIM_PID, fd=1,
                                   dirfd=L.AT_FDCWD, flags=0, count=0, value=b"", syscall_nr=1,
                                   truncated=0, comm="x", name="", bus="", path="/x"))
    _clean(repr(out) + repr(named) + cg + repr(who), watch)
    assert all(not n.startswith(str(h.outside)) for n in named)
    assert [e.value for e in out if isinstance(e, ev.SysfsWriteObserved)] == ["", ""]


def test_driverctl_and_hostname_reads_stay_inside(hostile: tuple[Hostile, OutsideWatch]) -> None:
    """driverctl overrides and the dashboard's hostname are not read through escaping links."""
    from diag.commands import tui
    from diag.runtime.settings import read_driverctl

    h, watch = hostile
    paths = HostPaths.at(h.root)
    got = (read_driverctl(paths), tui._read(paths, "etc/hostname"))
    _clean(repr(got), watch)
    assert got == ((), "")
