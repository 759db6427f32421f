"""The ebpf source's thin I/O around the decoder, on a fake root: paths, identity, loss."""

from __future__ import annotations

from pathlib import Path

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources import SourceContext
from diag.sources.ebpf import decode as D
from diag.sources.ebpf import layouts as L
from diag.sources.ebpf.source import EbpfSource


def _rec(kind: int, path: str, *, pid: int = 4242, ppid: int = 0, value: bytes = b"",
         result: int = 0, control: int = 0, dirfd: int = L.AT_FDCWD) -> D.RawRecord:
    return D.RawRecord(ts_ns=1_000, cgroup_id=0, result=result, kind=kind, control=control,
                       pid=pid, tid=pid, ppid=ppid, fd=1, dirfd=dirfd, flags=1,
                       count=len(value), value=value, syscall_nr=1, truncated=0, comm="sh",
                       name="", bus="", path=path)


def fake_root(tmp: Path) -> HostPaths:
    drv = tmp / "sys/bus/pci/drivers/vfio-pci"
    drv.mkdir(parents=True)
    (drv / "bind").write_text("")
    dev = tmp / "sys/devices/pci0000:00/0000:01:10.0"
    dev.mkdir(parents=True)
    (dev / "driver_override").write_text("")
    (dev / "driver").symlink_to("../../../bus/pci/drivers/vfio-pci")
    devs = tmp / "sys/bus/pci/devices"
    devs.mkdir(parents=True)
    (devs / "0000:01:10.0").symlink_to("../../../devices/pci0000:00/0000:01:10.0")
    parent = tmp / "proc/100"
    parent.mkdir(parents=True)
    (parent / "stat").write_text("100 (bash) S 1 100 100 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0")
    (parent / "cwd").symlink_to("/sys/bus/pci/drivers/vfio-pci")
    return HostPaths(tmp)


class TestPaths:
    def test_device_driver_link_form_is_not_resolved_through_the_driver_link(
            self, tmp_path: Path) -> None:
        """devices/<bdf>/driver/unbind keeps naming the device: the driver link, read after the
        write, points at whatever driver the device has now (found by the lab: the restore's
        unbind leaving vfio-pci was reported as igbvf's)."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        out = src.handle(_rec(L.VFW_KIND_WRITE, "/sys/bus/pci/devices/0000:01:10.0/driver/unbind",
                              value=b"0000:01:10.0", result=12, control=L.VFW_CTL_UNBIND))
        assert out is not None
        assert (out.path, out.control, out.driver, out.bdf) == (
            "/sys/bus/pci/devices/0000:01:10.0/driver/unbind", "unbind", None, "0000:01:10.0")

    def test_device_driver_link_form_of_an_unbound_device_is_kept(self, tmp_path: Path) -> None:
        """Found by the lab: handled after the unbind removed the driver link, the open was
        dropped as no control file; it is an unbind of that device."""
        paths = fake_root(tmp_path)
        (tmp_path / "sys/devices/pci0000:00/0000:01:10.0/driver").unlink()
        src = EbpfSource(SourceContext(paths=paths))
        out = src.handle(_rec(L.VFW_KIND_OPEN, "/sys/bus/pci/devices/0000:01:10.0/driver/unbind",
                              result=3, control=L.VFW_CTL_UNBIND))
        assert out is not None
        assert (out.path, out.control, out.stage) == (
            "/sys/bus/pci/devices/0000:01:10.0/driver/unbind", "unbind", "open")

    def test_relative_driver_link_form_resolves_to_the_device(self, tmp_path: Path) -> None:
        """`echo BDF > driver/unbind` from the device's directory names that device."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        assert src.handle(_rec(L.VFW_KIND_CHDIR, "/sys/bus/pci/devices/0000:01:10.0")) is None
        out = src.handle(_rec(L.VFW_KIND_WRITE, "driver/unbind", value=b"0000:01:10.0",
                              result=12, control=L.VFW_CTL_UNBIND))
        assert out is not None and out.path == "/sys/bus/pci/devices/0000:01:10.0/driver/unbind"

    def test_netdev_link_form_whose_netdev_is_gone_is_kept(self, tmp_path: Path) -> None:
        """/sys/class/net/<if>/device/driver/unbind (sriovnet #26) after the unbind removed the
        netdev: reported as written, an unbind, the device from the value."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        out = src.handle(_rec(L.VFW_KIND_WRITE, "/sys/class/net/eth1/device/driver/unbind",
                              value=b"0000:01:10.0", result=12, control=L.VFW_CTL_UNBIND))
        assert out is not None
        assert (out.path, out.control, out.bdf) == (
            "/sys/class/net/eth1/device/driver/unbind", "unbind", "0000:01:10.0")

    def test_device_files_are_named_as_kprobe_mode_names_them(self, tmp_path: Path) -> None:
        """driver_override reached through /sys/devices/... or a relative path is reported as
        /sys/bus/pci/devices/<bdf>/driver_override, the path kprobe mode and remedies use."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        for path in ("/sys/devices/pci0000:00/0000:01:10.0/driver_override",
                     "/sys/bus/pci/devices/0000:01:10.0/driver_override"):
            out = src.handle(_rec(L.VFW_KIND_WRITE, path, value=b"vfio-pci", result=8,
                                  control=L.VFW_CTL_DRIVER_OVERRIDE))
            assert out is not None and out.path == "/sys/bus/pci/devices/0000:01:10.0/driver_override"
            assert out.bdf == "0000:01:10.0"

    def test_relative_write_of_exited_child_uses_parent_cwd(self, tmp_path: Path) -> None:
        """A gone writer's relative path resolves against its parent's cwd (from the fork map)."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        out = src.handle(_rec(L.VFW_KIND_WRITE, "bind", ppid=100, value=b"0000:01:10.0\n",
                              result=13, control=L.VFW_CTL_BIND))
        assert out is not None and out.path == "/sys/bus/pci/drivers/vfio-pci/bind"
        assert out.actor.ppid == 100 and out.actor.ancestry[:1] == ("bash",)

    def test_chdir_record_sets_the_cwd_used_later(self, tmp_path: Path) -> None:
        """chdir records (absolute, then relative) give the directory of a later relative write."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        assert src.handle(_rec(L.VFW_KIND_CHDIR, "/sys/devices")) is None
        assert src.handle(_rec(L.VFW_KIND_CHDIR, "pci0000:00/0000:01:10.0")) is None
        out = src.handle(_rec(L.VFW_KIND_WRITE, "driver_override", value=b"vfio-pci",
                              result=8, control=L.VFW_CTL_DRIVER_OVERRIDE))
        assert out is not None
        assert (out.control, out.bdf, out.driver) == ("driver_override", "0000:01:10.0", "vfio-pci")

    def test_unresolvable_relative_write_is_still_reported(self, tmp_path: Path) -> None:
        """With no cwd anywhere, the write is reported with the path as given, never dropped."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        out = src.handle(_rec(L.VFW_KIND_WRITE, "unbind", value=b"0000:01:10.0", result=-19,
                              control=L.VFW_CTL_UNBIND))
        assert out is not None and (out.path, out.control, out.bdf) == ("unbind", "unbind", "0000:01:10.0")

    def test_non_sysfs_file_is_dropped(self, tmp_path: Path) -> None:
        """A file named `bind` outside sysfs is not an event."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        assert src.handle(_rec(L.VFW_KIND_WRITE, "/tmp/bind", value=b"x", control=L.VFW_CTL_BIND)) is None


class TestKprobeRecordsOnTheHost:
    def _store(self, control: int, name: str, bus: str, value: bytes) -> D.RawRecord:
        return D.RawRecord(ts_ns=1, cgroup_id=0, result=len(value), kind=L.VFW_KIND_STORE,
                           control=control, pid=4242, tid=4242, ppid=0, fd=-1, dirfd=0, flags=0,
                           count=len(value), value=value, syscall_nr=0, truncated=0, comm="sh",
                           name=name, bus=bus, path="")

    def test_store_record_naming_a_real_driver_is_kept(self, tmp_path: Path) -> None:
        """A bind_store record for a driver that exists under the root is an event."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        out = src.handle(self._store(L.VFW_CTL_BIND, "vfio-pci", "pci", b"0000:01:10.0"))
        assert out is not None and out.path == "/sys/bus/pci/drivers/vfio-pci/bind"

    def test_store_record_from_a_same_named_handler_elsewhere_is_dropped(self, tmp_path: Path) -> None:
        """A record whose driver/bus is not in sysfs (a same-named handler of another shape,
        probed by address) is dropped."""
        src = EbpfSource(SourceContext(paths=fake_root(tmp_path)))
        assert src.handle(self._store(L.VFW_CTL_NEW_ID, "\x10garbage", "??", b"x")) is None


class TestOpenOnlyReadBack:
    def test_driver_override_open_is_emitted_with_the_value_read_back(self, tmp_path: Path) -> None:
        """Open-only variant: an open of driver_override is emitted after a read-back, marked
        value_recovered, with the driver it names."""
        paths = fake_root(tmp_path)
        (tmp_path / "sys/devices/pci0000:00/0000:01:10.0/driver_override").write_text("vfio-pci\n")
        src = EbpfSource(SourceContext(paths=paths, options={"tracepoint_variant": "open-only"}))
        out: list[ev.Event] = []
        src._emit = out.append
        rec = _rec(L.VFW_KIND_OPEN, "/sys/bus/pci/devices/0000:01:10.0/driver_override", result=3,
                   control=L.VFW_CTL_DRIVER_OVERRIDE)
        raw = bytearray(L.RECORD_SIZE)
        src.handle = lambda _r: D.decode_record(  # type: ignore[method-assign]
            rec, actor=ev.Process(pid=rec.pid), wall_offset_ns=0, mode="tracepoint",
            resolved_path="/sys/devices/pci0000:00/0000:01:10.0/driver_override")
        src._on_raw(bytes(raw))
        assert out == []  # held for the read-back
        src._flush_delayed(float("inf"))
        (e,) = out
        assert isinstance(e, ev.SysfsWriteObserved)
        assert (e.stage, e.value, e.value_recovered, e.driver, e.result) == (
            "open", "vfio-pci", True, "vfio-pci", 3)

    def test_null_override_reads_back_empty(self) -> None:
        """`(null)` in driver_override means it was cleared: the recovered value is empty."""
        assert D.readback_value("driver_override", "(null)\n") == ""
        assert D.readback_value("sriov_numvfs", "4\n") == "4"


class TestNeverSilent:
    def test_a_failure_while_handling_a_record_is_reported(self) -> None:
        """An exception while handling a record (inside bcc's ctypes callback, where it would be
        swallowed) becomes a DecodeFailed event."""
        src = EbpfSource(SourceContext())
        out: list[ev.Event] = []
        src._emit = out.append

        def boom(_rec: D.RawRecord) -> None:
            raise RuntimeError("boom")

        src.handle = boom  # type: ignore[method-assign,assignment]
        src._on_raw(bytes(L.RECORD_SIZE))
        (e,) = out
        assert isinstance(e, ev.DecodeFailed) and "boom" in e.reason

    def test_short_record_is_reported(self) -> None:
        """A record of the wrong size becomes a DecodeFailed event with a hex sample."""
        src = EbpfSource(SourceContext())
        out: list[ev.Event] = []
        src._emit = out.append
        src._on_raw(b"\x01\x02")
        (e,) = out
        assert isinstance(e, ev.DecodeFailed) and e.sample_hex == "0102"


class _FakeProg:
    def __init__(self) -> None:
        self.lost = [0, 0]

    def percpu_sum(self, table: str, key: int = 0) -> int:
        return self.lost[key]


class TestLoss:
    def test_kernel_loss_counters_become_events_lost(self) -> None:
        """Growth of the in-kernel loss counters is emitted once, as the delta, per cause."""
        src = EbpfSource(SourceContext())
        out: list[ev.Event] = []
        src._emit = out.append
        prog = _FakeProg()
        src._check_lost(prog)
        assert out == []
        prog.lost = [5, 1]
        src._check_lost(prog)
        src._check_lost(prog)
        lost = [e for e in out if isinstance(e, ev.EventsLost)]
        assert [(e.count, e.lost_source) for e in lost] == [(5, "ebpf"), (1, "ebpf")]
        assert "ring buffer" in lost[0].reason and "tracking table" in lost[1].reason



def test_kallsyms_addresses_lists_every_text_address(tmp_path: Path) -> None:
    """Each name maps to all of its text addresses (data symbols ignored)."""
    from diag.sources.ebpf.bcc_facade import kallsyms_addresses

    f = tmp_path / "kallsyms"
    f.write_text("ffffffff81c532f0 t new_id_store\nffffffff81d51640 t driver_override_store\n"
                 "ffffffff81d9e980 t new_id_store\n0000000000000000 d new_id_store\n")
    got = kallsyms_addresses({"new_id_store", "driver_override_store", "bind_store"}, str(f))
    assert got == {"new_id_store": [0xffffffff81c532f0, 0xffffffff81d9e980],
                   "driver_override_store": [0xffffffff81d51640], "bind_store": []}


class TestVariantChoice:
    NO_KPROBES = dict(config_kprobes="n", release="6.18")

    def test_tracepoint_mode_defaults_to_open_only_and_says_what_it_misses(self) -> None:
        """Without kprobes the default variant is open-only (least overhead), and the mode's
        reason says that a failed write's errno is not seen and how to get it."""
        from diag.sources.ebpf.mode import KernelFacts
        src = EbpfSource(SourceContext())
        src._facts = KernelFacts(**self.NO_KPROBES)  # type: ignore[arg-type]
        assert src.variant == "open-only"
        a = src.probe()
        assert a.ok and a.mode == "tracepoint"
        assert "CONFIG_KPROBES unset" in a.reason and "open-only variant" in a.reason
        assert "errno not seen" in a.reason and 'tracepoint_variant = "complete"' in a.reason

    def test_complete_variant_is_named_when_chosen(self) -> None:
        """`tracepoint_variant = "complete"` is reported as such."""
        from diag.sources.ebpf.mode import KernelFacts
        src = EbpfSource(SourceContext(options={"tracepoint_variant": "complete"}))
        src._facts = KernelFacts(**self.NO_KPROBES)  # type: ignore[arg-type]
        assert "complete variant: value and result of every write" in src.probe().reason

    def test_kprobe_mode_has_no_variant_note(self) -> None:
        """In kprobe mode the variant option does not apply and is not mentioned."""
        from diag.sources.ebpf.mode import ESSENTIAL_HANDLERS, KernelFacts
        src = EbpfSource(SourceContext())
        src._facts = KernelFacts(kprobe_pmu=True, config_kprobes="y",
                                 handlers=frozenset(ESSENTIAL_HANDLERS))
        a = src.probe()
        assert a.mode == "kprobe" and "variant" not in a.reason
