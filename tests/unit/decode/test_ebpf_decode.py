"""eBPF records decode on any machine: recorded probe output, path classification, mode choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag import events as ev
from diag.sources.ebpf import decode as D
from diag.sources.ebpf import layouts as L
from diag.sources.ebpf.mode import KernelFacts, choose_mode

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ebpf"
TRACEPOINT = sorted((FIXTURES / "tracepoint").glob("*.hex"))
KPROBE = sorted((FIXTURES / "kprobe").glob("*.hex"))  # captured in the QEMU lab, when present


def load_hex(path: Path) -> list[bytes]:
    return [bytes.fromhex(line) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def replay(records: list[bytes]) -> list[ev.SysfsWriteObserved]:
    """Decode as the source does, minus /proc and realpath: cwd comes from chdir records."""
    cwd: dict[int, str] = {}
    out = []
    for raw in records:
        rec = D.parse_record(raw)
        if rec.kind == L.VFW_KIND_CHDIR:
            cwd[rec.pid] = D.resolve_against(rec.path, cwd.get(rec.pid)) or ""
            continue
        actor = ev.Process(pid=rec.pid, comm=rec.comm, ppid=rec.ppid or None)
        mode = "kprobe" if rec.kind == L.VFW_KIND_STORE else "tracepoint"
        e = D.decode_record(rec, actor=actor, wall_offset_ns=0, mode=mode,
                            resolved_path=D.resolve_against(rec.path, cwd.get(rec.pid)))
        if e is not None:
            out.append(e)
    return out


class TestRecordedRecords:
    @pytest.mark.parametrize("path", TRACEPOINT + KPROBE,
                             ids=[f"{p.parent.name}/{p.stem}" for p in TRACEPOINT + KPROBE])
    def test_fixture_decodes_to_the_recorded_events(self, path: Path) -> None:
        """Raw records captured on the CI kernel decode to the control, value, device and errno seen live."""
        expected = json.loads(path.with_suffix(".expected.json").read_text())
        got = replay(load_hex(path))
        assert len(got) == len(expected) >= 1
        for e, x in zip(got, expected, strict=True):
            assert (e.control, e.value, e.bdf, e.result, e.actor.comm) == (
                x["control"], x["value"], x["bdf"], x["result"], x["comm"])
            if "{real}" not in path.read_text() and "symlink" not in path.stem:
                assert e.path == x["path"] and e.driver == x["driver"]

    def test_there_are_tracepoint_fixtures(self) -> None:
        """The fixture set covers absolute, relative, symlinked, no-newline and failed-open writes."""
        assert {p.stem for p in TRACEPOINT} >= {
            "echo-absolute-bind", "printf-relative-unbind", "symlink-driver-unbind",
            "gowrite-drivers-probe", "open-enoent-bind"}

    def test_short_record_is_a_record_error(self) -> None:
        """Bytes shorter than struct vfw_record raise RecordError (counted as DecodeFailed)."""
        with pytest.raises(D.RecordError):
            D.parse_record(b"\0" * 100)

    def test_value_keeps_text_without_newline(self) -> None:
        """echo's trailing newline is stripped; printf's value is kept as is."""
        rec = D.parse_record(load_hex(FIXTURES / "tracepoint" / "echo-absolute-bind.hex")[0])
        assert rec.value.endswith(b"\n") and D.value_text(rec) == "0000:ff:1f.7"


class TestClassifyPath:
    @pytest.mark.parametrize(("path", "want"), [
        ("/sys/bus/pci/drivers/vfio-pci/bind", ("bind", None, "vfio-pci")),
        ("/sys/bus/pci/drivers/igbvf/unbind", ("unbind", None, "igbvf")),
        ("/sys/bus/pci/drivers/vfio-pci/new_id", ("new_id", None, "vfio-pci")),
        ("/sys/bus/pci/drivers/vfio-pci/remove_id", ("remove_id", None, "vfio-pci")),
        ("/sys/bus/pci/drivers_probe", ("drivers_probe", None, None)),
        ("/sys/bus/pci/rescan", ("rescan", None, None)),
        ("/sys/devices/pci0000:00/0000:00:02.0/0000:01:10.0/driver_override",
         ("driver_override", "0000:01:10.0", None)),
        ("/sys/bus/pci/devices/0000:01:10.0/driver_override", ("driver_override", "0000:01:10.0", None)),
        ("/sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/sriov_numvfs",
         ("sriov_numvfs", "0000:01:00.0", None)),
        ("/sys/devices/pci0000:00/0000:01:00.0/sriov_drivers_autoprobe",
         ("sriov_drivers_autoprobe", "0000:01:00.0", None)),
        ("/sys/devices/pci0000:00/0000:01:10.0/remove", ("remove", "0000:01:10.0", None)),
        ("/sys/devices/pci0000:00/0000:01:10.0/reset", ("reset", "0000:01:10.0", None)),
        ("/sys/bus/pci/devices/0000:01:10.0/driver/unbind", ("unbind", None, None)),
        # The sriovnet #26 form whose link the unbind removed before we could resolve it.
        ("/sys/class/net/eth1/device/driver/unbind", ("unbind", None, None)),
        ("/sys/class/net/eth1/device/driver_override", ("driver_override", None, None)),
    ])
    def test_control_files(self, path: str, want: tuple[str, str | None, str | None]) -> None:
        """Every control file form is classified with the device or driver its path names."""
        cf = D.classify_path(path)
        assert cf is not None and (cf.control, cf.bdf, cf.driver) == want

    @pytest.mark.parametrize("path", [
        "/tmp/bind", "bind", "/sys/class/net/eth0/unbind", "/sys/class/net/eth0/device/x/unbind",
        "/sys/class/net/eth0/device/driver/driver_override",
        "/sys/bus/pci/drivers/vfio-pci/module", "/sys/devices/system/memory/memory0/remove",
        "/sys/kernel/debug/remove",
    ])
    def test_other_files_are_not_control_files(self, path: str) -> None:
        """Files named like control files outside the PCI driver core are dropped."""
        assert D.classify_path(path) is None

    def test_relative_paths_resolve_against_cwd(self) -> None:
        """`unbind` in /sys/bus/pci/drivers/x and `../x/bind` resolve against the writer's cwd."""
        assert D.resolve_against("unbind", "/sys/bus/pci/drivers/x") == "/sys/bus/pci/drivers/x/unbind"
        assert D.resolve_against("../y/bind", "/sys/bus/pci/drivers/x") == "/sys/bus/pci/drivers/y/bind"
        assert D.resolve_against("bind", None) is None


def _store(control: int, name: str, bus: str, value: bytes, result: int) -> D.RawRecord:
    return D.RawRecord(ts_ns=5, cgroup_id=1, result=result, kind=L.VFW_KIND_STORE, control=control,
                       pid=10, tid=10, ppid=1, fd=-1, dirfd=0, flags=0, count=len(value),
                       value=value, syscall_nr=0, truncated=0, comm="containerd-shim", name=name,
                       bus=bus, path="")


class TestKprobeRecords:
    @pytest.mark.parametrize(("rec", "path", "bdf", "driver"), [
        (_store(L.VFW_CTL_DRIVER_OVERRIDE, "0000:01:10.0", "", b"vfio-pci", 8),
         "/sys/bus/pci/devices/0000:01:10.0/driver_override", "0000:01:10.0", "vfio-pci"),
        (_store(L.VFW_CTL_UNBIND, "igbvf", "pci", b"0000:01:10.0", 12),
         "/sys/bus/pci/drivers/igbvf/unbind", "0000:01:10.0", "igbvf"),
        (_store(L.VFW_CTL_DRIVERS_PROBE, "pci", "", b"0000:01:10.0", 12),
         "/sys/bus/pci/drivers_probe", "0000:01:10.0", None),
        (_store(L.VFW_CTL_NEW_ID, "vfio-pci", "pci", b"8086 10ca", 9),
         "/sys/bus/pci/drivers/vfio-pci/new_id", None, "vfio-pci"),
        (_store(L.VFW_CTL_SRIOV_NUMVFS, "0000:01:00.0", "", b"2\n", 2),
         "/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "0000:01:00.0", None),
    ])
    def test_store_handler_records_rebuild_the_file(self, rec: D.RawRecord, path: str,
                                                     bdf: str | None, driver: str | None) -> None:
        """A store handler's record names the file from the device/driver/bus the handler got."""
        e = D.decode_record(rec, actor=ev.Process(pid=10), resolved_path=None, wall_offset_ns=100,
                            mode="kprobe")
        assert e is not None
        assert (e.path, e.bdf, e.driver, e.mode, e.ts_ns) == (path, bdf, driver, "kprobe", 105)


FACTS_HERE = KernelFacts(release="6.18", kprobe_pmu=False, config_kprobes="n")
FACTS_KPROBES = KernelFacts(release="6.12", kprobe_pmu=True, config_kprobes="y",
                            handlers=frozenset({"bind_store", "unbind_store", "drivers_probe_store",
                                                "driver_override_store", "new_id_store"}))


class TestChooseMode:
    def test_no_kprobes_falls_back_to_tracepoints_and_says_why(self) -> None:
        """On this CI kernel (CONFIG_KPROBES unset) auto picks tracepoint with the reason."""
        c = choose_mode("auto", FACTS_HERE)
        assert (c.mode, c.reason) == ("tracepoint", "no kprobes: CONFIG_KPROBES unset")

    def test_kprobes_preferred_where_the_handlers_exist(self) -> None:
        """With kprobes and the store handlers, auto picks kprobe."""
        assert choose_mode("auto", FACTS_KPROBES).mode == "kprobe"

    def test_forcing(self) -> None:
        """mode=tracepoint is honoured on a kprobe kernel; mode=kprobe without kprobes is refused."""
        assert choose_mode("tracepoint", FACTS_KPROBES).mode == "tracepoint"
        c = choose_mode("kprobe", FACTS_HERE)
        assert c.mode == "" and "CONFIG_KPROBES unset" in c.reason and c.hint

    def test_missing_essential_handler_means_no_kprobe_mode(self) -> None:
        """Without driver_override_store (Kata's first write) kprobe mode is not chosen."""
        f = KernelFacts(kprobe_pmu=True, config_kprobes="y", handlers=frozenset({"bind_store"}))
        c = choose_mode("auto", f)
        assert c.mode == "tracepoint" and "driver_override_store" in c.reason

    def test_ambiguous_handler_names_are_not_kprobed(self) -> None:
        """A handler kallsyms lists twice is never attached by name; the reason says so."""
        f = KernelFacts(kprobe_pmu=True, config_kprobes="y",
                        handlers=frozenset({"bind_store", "unbind_store", "drivers_probe_store"}),
                        ambiguous=frozenset({"driver_override_store"}))
        c = choose_mode("auto", f)
        assert c.mode == "tracepoint"
        assert c.reason == "no kprobes: store handlers ambiguous in kallsyms: driver_override_store"

    def test_handlers_listed_twice_with_addresses_are_used(self) -> None:
        """A handler kallsyms lists twice but with visible addresses is probed by address."""
        f = KernelFacts(kprobe_pmu=True, config_kprobes="y",
                        handlers=frozenset({"bind_store", "unbind_store", "drivers_probe_store",
                                            "driver_override_store"}),
                        addresses=(("driver_override_store", (0xffffffff81000000, 0xffffffff82000000)),))
        c = choose_mode("auto", f)
        assert c.mode == "kprobe" and c.reason.startswith("kprobes on 4 store handlers; not covered:")
        assert "new_id_store (absent)" in c.reason

    @pytest.mark.parametrize(("facts", "words"), [
        (KernelFacts(bcc_error="ModuleNotFoundError: No module named 'bcc'"), "python3-bpfcc"),
        (KernelFacts(missing_caps=(("BPF", "load"), ("PERFMON", "attach"))),
         "AmbientCapabilities=CAP_BPF CAP_PERFMON"),
        (KernelFacts(tracefs=False), "mount -t tracefs"),
        (KernelFacts(headers=False, release="6.18"), "linux-headers-6.18"),
        (KernelFacts(raw_syscalls=False), "CONFIG_KPROBES=y"),
    ])
    def test_unavailable_says_why_and_the_fix(self, facts: KernelFacts, words: str) -> None:
        """Each missing prerequisite gives an empty mode, a reason and a one-line fix."""
        c = choose_mode("auto", facts)
        assert c.mode == "" and c.reason and words in c.hint
