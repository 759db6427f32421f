"""Postmortem decoders, one format at a time, on the lab's real captures and hand-made hostile lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from diag import events as ev
from diag.importers import FileStats, iter_lines, read_head, sniff
from diag.importers.ipmon import parse_ip_monitor
from diag.importers.journald import parse_journald_json
from diag.importers.logfmt import parse_logfmt_lines
from diag.importers.lspci import parse_lspci
from diag.importers.snapshot import parse_snapshot
from diag.importers.udevadm import parse_udevadm

PM = Path(__file__).resolve().parents[2] / "fixtures" / "postmortem"
KATA = Path(__file__).resolve().parents[2] / "fixtures" / "postmortem-kata"
LINE_10162 = (
    "qemu-system-x86_64: -device vfio-pci,host=0000:01:10.0,x-pci-vendor-id=0x8086,"
    "x-pci-device-id=0x10ca,bus=<unknown PCIePortBusPrefix: >0: Bus "
    "'<unknown PCIePortBusPrefix: >0' not found"
)


def _kinds(events: list[ev.Event], bdf: str = "0000:01:10.0") -> list[str]:
    out = []
    for e in events:
        if getattr(e, "bdf", None) != bdf:
            continue
        if isinstance(e, ev.DeviceBound):
            out.append(f"bind {e.driver}")
        elif isinstance(e, ev.DeviceUnbound):
            out.append(f"unbind {e.previous_driver}")
        elif isinstance(e, (ev.NetdevAdded, ev.NetdevRemoved)):
            out.append(f"{e.kind} {e.ifname}")
    return out


# ---- udevadm ------------------------------------------------------------------------------


def test_udevadm_property_capture_gives_the_real_kata_moves_with_drivers() -> None:
    """--property: every bind names its driver, every unbind the driver it left (live tracker)."""
    st = FileStats("x")
    events = list(parse_udevadm((PM / "udevadm-monitor-kernel-property.txt").read_text().splitlines(), st))
    assert st.bad_lines == 0
    moves = [k for k in _kinds(events) if k.startswith(("bind", "unbind"))]
    assert moves == [
        "bind igbvf", "unbind igbvf", "bind vfio-pci", "unbind vfio-pci", "bind igbvf",
        "unbind igbvf", "bind vfio-pci", "unbind vfio-pci", "bind igbvf", "unbind igbvf",
    ]
    added = [e for e in events if isinstance(e, ev.NetdevAdded) and e.bdf == "0000:01:10.0"]
    assert [e.ifindex for e in added] == [3, 5, 6]  # a new ifindex after every restore
    vfio = [e for e in events if isinstance(e, ev.VfioDeviceAdded) and e.group is not None]
    assert {e.devname for e in vfio} == {"vfio/5"}  # udevadm's /dev/ prefix removed
    assert all(e.ts_ns < 20 * 10**9 for e in events)  # monotonic seconds since boot


def test_udevadm_without_property_infers_vfio_pci_and_says_so() -> None:
    """Plain --kernel: a bind after a vfio-dev node is vfio-pci; a host bind stays unnamed."""
    st = FileStats("x")
    events = list(parse_udevadm((PM / "udevadm-monitor-kernel.txt").read_text().splitlines(), st))
    binds = [k for k in _kinds(events) if k.startswith("bind")]
    assert binds == ["bind ", "bind vfio-pci", "bind ", "bind vfio-pci", "bind "]
    unbinds = [e for e in events if isinstance(e, ev.DeviceUnbound) and e.bdf == "0000:01:10.0"]
    # After a bind whose driver is unknown, the driver it leaves is unknown too (not a guess).
    assert [u.previous_driver for u in unbinds] == [None, "vfio-pci", None, "vfio-pci", None]
    assert any("inferred" in n for n in st.notes)


def test_udevadm_kernel_and_udev_copies_of_one_uevent_are_taken_once() -> None:
    """With --kernel --udev the UDEV copy of a KERNEL record is dropped (SEQNUM or devpath)."""
    text = [
        "monitor will print the received events for:",
        "UDEV - the event which udev sends out after rule processing",
        "KERNEL - the kernel uevent",
        "",
        "KERNEL[100.000001] unbind   /devices/pci0000:00/0000:00:02.0/0000:01:10.0 (pci)",
        "UDEV  [100.000900] unbind   /devices/pci0000:00/0000:00:02.0/0000:01:10.0 (pci)",
        "UDEV  [100.002000] bind     /devices/pci0000:00/0000:00:02.0/0000:01:10.0 (pci)",
    ]
    events = list(parse_udevadm(text))
    assert [type(e).__name__ for e in events] == ["DeviceUnbound", "DeviceBound"]


def test_udevadm_udev_only_capture_is_read() -> None:
    """A --udev-only capture still gives events (no KERNEL lines to prefer)."""
    text = ["UDEV  [5.5] remove   /devices/pci0000:00/0000:00:02.0/0000:01:10.2 (pci)"]
    events = list(parse_udevadm(text))
    assert events == [ev.DeviceRemoved(ts_ns=5_500_000_000, source="uevent", bdf="0000:01:10.2")]


def test_udevadm_synthetic_uevents_are_marked() -> None:
    """SYNTH_UUID in the properties marks the event synthetic, as live."""
    text = [
        "KERNEL[1.0] bind     /devices/pci0000:00/0000:00:03.0 (pci)",
        "ACTION=bind", "DEVPATH=/devices/pci0000:00/0000:00:03.0", "SUBSYSTEM=pci",
        "DRIVER=virtio-pci", "PCI_SLOT_NAME=0000:00:03.0", "SYNTH_UUID=1234", "SEQNUM=9", "",
    ]
    (e,) = list(parse_udevadm(text))
    assert isinstance(e, ev.DeviceBound) and e.synthetic and e.driver == "virtio-pci"


def test_udevadm_malformed_lines_are_counted_with_the_first_example() -> None:
    """Garbage between records is skipped, counted, and the first one quoted."""
    st = FileStats("x")
    text = ["KERNEL[1.0] unbind /devices/pci0000:00/0000:00:02.0/0000:01:10.0 (pci)",
            "\x1b[31mgarbage", "more garbage",
            "KERNEL[2.0] unbind /devices/pci0000:00/0000:00:02.0/0000:01:10.2 (pci)"]
    events = list(parse_udevadm(text, st))
    assert len(events) == 2
    assert st.bad_lines == 2 and st.first_bad.startswith("line 2:")


# ---- ip monitor ---------------------------------------------------------------------------


def test_ip_ts_monitor_capture_gives_link_events_on_the_wall_clock() -> None:
    """`ip -ts monitor link`: realtime stamps, Deleted -> LinkRemoved, new ifindex after restore."""
    st = FileStats("x")
    events = list(parse_ip_monitor((PM / "ip-ts-monitor-link.txt").read_text().splitlines(), st))
    assert st.bad_lines == 0 and st.clock == "realtime" and len(events) == 15
    eth1 = [(type(e).__name__, e.ifindex) for e in events if e.ifname == "eth1"]
    assert eth1 == [("LinkChanged", 3), ("LinkRemoved", 3), ("LinkChanged", 5),
                    ("LinkRemoved", 5), ("LinkChanged", 6), ("LinkRemoved", 6)]
    first = events[0]
    assert isinstance(first, ev.LinkChanged) and first.mac == "52:54:00:12:34:56"
    assert first.ts_ns == 1795791168144176000  # 2026-11-27T14:52:48.144176 read as UTC


def test_plain_ip_monitor_has_no_clock_and_ordinal_stamps() -> None:
    """`ip monitor link` without -t: stamps are the message ordinals, clock `none`."""
    st = FileStats("x")
    events = list(parse_ip_monitor((PM / "ip-monitor-link.txt").read_text().splitlines(), st))
    assert st.clock == "none" and [e.ts_ns for e in events] == list(range(1, 16))


def test_ip_monitor_t_and_nsid_and_tags() -> None:
    """`ip -t` Timestamp lines, `[nsid N]`, `[LINK]` tags, `name@peer`; other objects skipped."""
    text = [
        "Timestamp: Fri Nov 27 14:52:48 2026 144176 usec",
        "[LINK][nsid 2] 7: veth0@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP",
        "    link/ether aa:bb:cc:dd:ee:ff brd ff:ff:ff:ff:ff:ff link-netnsid 0",
        "[ADDR]2: eth0    inet 10.0.0.1/24 scope global eth0",
        "       valid_lft forever preferred_lft forever",
        "[nsid current] Deleted 8: eth9: <BROADCAST> mtu 1500 state DOWN",
    ]
    st = FileStats("x")
    a, b = list(parse_ip_monitor(text, st))
    assert isinstance(a, ev.LinkChanged) and a.ifname == "veth0" and a.carrier is True
    assert a.netns.label == "nsid:2" and a.ts_ns == 1795791168144176000 and a.admin_up
    assert isinstance(b, ev.LinkRemoved) and b.netns.is_host
    assert st.bad_lines == 0


# ---- journald JSON and logfmt -------------------------------------------------------------


def test_journald_export_from_a_real_journal_file_matches_kata_signatures() -> None:
    """journalctl -o json of a real journal file: the #10162 line, kernel vfio-pci, anchors."""
    from diag.importers import Anchor

    st = FileStats("x")
    anchors: list[Anchor] = []
    events = list(parse_journald_json(iter_lines(str(KATA / "journalctl-kata-containerd-kernel.json"), st), st, anchors))
    sigs = [e.signature for e in events if isinstance(e, ev.LogLineMatched)]
    assert "qemu-bus-not-found" in sigs and "vfio-device-request" in sigs
    lines = [e for e in events if isinstance(e, ev.LogLineMatched)]
    bus = next(e for e in lines if e.signature == "qemu-bus-not-found")
    assert isinstance(bus, ev.LogLineMatched)
    assert bus.text == LINE_10162 and bus.bdf == "0000:01:10.0" and bus.qemu_pid == 4242
    assert bus.sandbox_id and bus.sandbox_id.startswith("7f3c9a1e")
    kernel = next(e for e in lines if e.signature == "vfio-device-request")
    assert kernel.origin == "journald:kernel"  # type: ignore[attr-defined]
    assert len({a.boot_id for a in anchors}) == 1 and len(anchors) == st.lines
    assert {a.realtime_ns - a.monotonic_ns for a in anchors} == {1795791160912205000}
    # Kata's write lines are the writes they announce, attributed to the shim (issue 17).
    writes = [e for e in events if isinstance(e, ev.SysfsWriteObserved)]
    assert {(w.control, w.value, w.mode, w.actor.pid) for w in writes} >= {
        ("driver_override", "vfio-pci", "kata-log", 3131), ("drivers_probe", "0000:01:10.0",
                                                              "kata-log", 3131)}


def test_containerd_wrapped_kata_error_is_matched_in_its_error_field() -> None:
    """containerd's `RunPodSandbox ... failed, error` line matches on the wrapped Kata error."""
    line = ('time="2026-11-27T14:52:53.78188Z" level=error msg="RunPodSandbox for x failed, error" '
            'error="failed to create containerd task: failed to create shim task: unable to add '
            'PhysicalEndpoint eth1 because cold_plug_vfio is disabled: unknown"')
    (e,) = list(parse_logfmt_lines([line]))
    assert isinstance(e, ev.LogLineMatched) and e.signature == "coldplug-disabled-refusal"
    assert "cold_plug_vfio is disabled" in e.text


def test_logfmt_file_with_syslog_prefix_and_exact_10162_line() -> None:
    """A syslog-prefixed Go shim line carrying the exact #10162 text decodes to its signature."""
    line = (f'Nov 27 14:52:52 node kata[3131]: time="2026-11-27T14:52:52.570905Z" level=error '
            f'msg="{LINE_10162}" qemuPid=4242 sandbox=abc source=virtcontainers/hypervisor '
            'subsystem=qemu')
    (e,) = list(parse_logfmt_lines([line]))
    assert isinstance(e, ev.LogLineMatched) and e.signature == "qemu-bus-not-found"
    assert e.text == LINE_10162 and e.ts_ns == 1795791172570905000 and e.sandbox_id == "abc"


def test_logfmt_known_line_without_time_is_kept_in_place_time_unknown() -> None:
    """A known line without time= is evidence, never skipped (issue 17): between timed lines
    it keeps its place with its neighbour's stamp, flagged untimed; alone, the input has no
    time (clock none)."""
    from diag.importers import Parsed

    st = FileStats("x")
    parsed = Parsed(events=(), clock="realtime")
    timed = f'time="2026-11-27T14:52:52.1Z" level=error msg="{LINE_10162}" sandbox=abc'
    got = list(parse_logfmt_lines([timed, 'level=error msg="Cannot start VM"'], st, "f", parsed))
    assert [e.kind for e in got] == ["log_line_matched", "log_line_matched"]
    assert got[1].ts_ns == got[0].ts_ns and parsed.untimed == [False, True] and st.bad_lines == 0
    alone = Parsed(events=(), clock="realtime")
    (e,) = list(parse_logfmt_lines(['level=error msg="Cannot start VM"'], FileStats("y"), "f", alone))
    assert e.signature == "cannot-start-vm" and alone.clock == "none"


# ---- lspci and snapshot -------------------------------------------------------------------

LSPCI = """\
0000:01:00.0 Ethernet controller [0200]: Intel Corporation 82576 Gigabit Network Connection [8086:10c9] (rev 01)
\tSubsystem: Red Hat, Inc. Device [1af4:1100]
\tIOMMU group: 4
\tCapabilities: [160 v1] Single Root I/O Virtualization (SR-IOV)
\t\tInitial VFs: 8, Total VFs: 8, Number of VFs: 2, Function Dependency Link: 00
\t\tVF offset: 128, stride: 2, Device ID: 10ca
\tKernel driver in use: igb
\tKernel modules: igb
0000:01:10.0 Ethernet controller [0200]: Intel Corporation 82576 Virtual Function [8086:10ca] (rev 01)
\tKernel driver in use: vfio-pci
\tKernel modules: igbvf
01:10.2 Ethernet controller [0200]: Intel Corporation 82576 Virtual Function [8086:10ca] (rev 01)
\tKernel driver in use: igbvf
"""


def test_lspci_listing_gives_inventory_with_sriov_roles() -> None:
    """lspci -nnk -vvv: ids, class, drivers, IOMMU group and VFs from offset/stride."""
    st = FileStats("x")
    (inv,) = list(parse_lspci(LSPCI.splitlines(), st))
    assert isinstance(inv, ev.InventoryObserved) and st.bad_lines == 0
    d = {x.bdf: x for x in inv.devices}
    pf = d["0000:01:00.0"]
    assert (pf.vendor, pf.device, pf.class_code, pf.driver) == ("8086", "10c9", "020000", "igb")
    assert pf.role == "pf" and pf.sriov_numvfs == 2 and pf.vfs == ("0000:01:10.0", "0000:01:10.2")
    assert pf.iommu_group == 4
    vf = d["0000:01:10.0"]
    assert vf.role == "vf" and vf.pf == "0000:01:00.0" and vf.vf_index == 0 and vf.driver == "vfio-pci"
    assert d["0000:01:10.2"].vf_index == 1


def test_snapshot_json_round_trips_the_scanner_inventory(tmp_path: Path) -> None:
    """`vfiowatch snapshot --format json` of the lab tree reads back as the same devices."""
    from diag.commands.snapshot import snapshot_json
    from diag.common.paths import HostPaths
    from diag.sources import sysfs

    root = Path(__file__).resolve().parents[2] / "fixtures" / "sysfs" / "sriov-lab"
    doc = snapshot_json(HostPaths.at(root))
    (inv,) = list(parse_snapshot(json.dumps(doc, indent=2)))
    assert isinstance(inv, ev.InventoryObserved)
    assert inv.devices == tuple(sysfs.scan(HostPaths.at(root)))


# ---- files: sniffing, gzip, damage ------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [
    ("postmortem/udevadm-monitor-kernel.txt", "udevadm"),
    ("postmortem/udevadm-monitor-kernel-property.txt", "udevadm"),
    ("postmortem/ip-monitor-link.txt", "ipmon"),
    ("postmortem/ip-ts-monitor-link.txt", "ipmon"),
    ("postmortem-kata/journalctl-kata-containerd-kernel.json", "journald"),
    ("postmortem-kata/containerd.log", "logfmt"),
    ("postmortem-kata/entries.export", "journal-export"),
    ("postmortem/lab-actions.log", "text"),  # no importer of its own: searched as text
])
def test_format_is_recognised_by_content_not_name(tmp_path: Path, name: str, fmt: str | None) -> None:
    """Each capture is recognised under a meaningless name, plain and gzip-compressed."""
    src = Path(__file__).resolve().parents[2] / "fixtures" / name
    plain = tmp_path / "input.bin"
    plain.write_bytes(src.read_bytes())
    packed = tmp_path / "other.dat"
    packed.write_bytes(gzip.compress(src.read_bytes()))
    for p in (plain, packed):
        imp, err = sniff(str(p))
        assert err == ""
        assert (imp.name if imp else None) == fmt


def test_truncated_and_corrupt_gzip_never_raise(tmp_path: Path) -> None:
    """A cut .gz yields the lines before the cut and a note; garbage after the magic too."""
    data = gzip.compress((PM / "udevadm-monitor-kernel.txt").read_bytes())
    cut = tmp_path / "cut.gz"
    cut.write_bytes(data[: len(data) // 2])
    st = FileStats(str(cut))
    lines = list(iter_lines(str(cut), st))
    assert lines and st.truncated and st.notes
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + b"\xff" * 100)
    st2 = FileStats(str(bad))
    assert list(iter_lines(str(bad), st2)) == [] and st2.truncated
    assert "corrupt" in read_head(str(bad))[1]  # nothing at all could be read: an error


def test_unreadable_file_reports_an_error(tmp_path: Path) -> None:
    """A path that cannot be opened gives an error text, not an exception."""
    st = FileStats("x")
    assert list(iter_lines(str(tmp_path / "missing"), st)) == []
    assert st.error


# ---- the agent's own journal ------------------------------------------------------------------


def _journal_lines(part: int, restated: int, events: list[ev.Event]) -> list[bytes]:
    from diag import codec

    h = codec.Header(boot_id="b00t", started_ns=1, part=part)
    lines = [codec.dumps(h)]
    if restated and hasattr(h, "snapshot_records"):
        lines = [codec.dumps(codec.Header(boot_id="b00t", started_ns=1, part=part,
                                          snapshot_records=restated))]
    return lines + [codec.dumps(e) for e in events]


def test_read_journal_counts_bad_lines_and_reports_a_cut_tail(tmp_path: Path) -> None:
    """A rotated .gz part with a damaged line and a crash-cut last line: both reported, rest read."""
    from diag.importers.journal import read_journal

    evs = [ev.DeviceBound(ts_ns=10 + i, source="uevent", bdf="0000:01:10.0", driver="igbvf")
           for i in range(5)]
    lines = _journal_lines(0, 0, evs)
    lines.insert(3, b'{"kind":"device_bound","ts_ns":"oops"\n')
    data = b"".join(lines) + b'{"kind":"device_unbound","ts_ns":99,"sour'
    p = tmp_path / "journal.jsonl.000003.gz"
    p.write_bytes(gzip.compress(data))
    jr = read_journal(str(p))
    got = list(jr.events)
    assert got == evs
    assert jr.stats.bad_lines == 1 and jr.stats.first_bad.startswith("line 4:")
    assert jr.stats.truncated_tail and jr.error == ""


def test_later_rotated_part_skips_its_restated_state_when_the_earlier_part_is_given(tmp_path: Path) -> None:
    """Parts 0 and 1 of one run: part 1's opening restatement is skipped, not replayed twice."""
    from diag import codec
    from diag import postmortem as pm

    if "snapshot_records" not in codec.Header.__slots__:
        pytest.skip("journal header has no snapshot_records")
    a = [ev.DeviceBound(ts_ns=10, source="uevent", bdf="0000:01:10.0", driver="vfio-pci")]
    restate = [ev.SourceStateChanged(ts_ns=20, source="runtime", name="uevent", up=True)]
    b = [ev.DeviceUnbound(ts_ns=30, source="uevent", bdf="0000:01:10.0")]
    (tmp_path / "j.jsonl.000000").write_bytes(b"".join(_journal_lines(0, 0, a)))
    (tmp_path / "j.jsonl").write_bytes(b"".join(_journal_lines(1, 1, restate + b)))
    report = pm.run([str(tmp_path)], pm.Options())
    kinds = [e.event.kind for e in report.timeline if e.input >= 0]
    assert kinds == ["device_bound", "device_unbound"]
    alone = pm.run([str(tmp_path / "j.jsonl")], pm.Options())
    assert [e.event.kind for e in alone.timeline if e.input >= 0] == ["source_state_changed", "device_unbound"]


def test_progress_bar_draws_only_for_big_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bar for a replay that ends quickly; after the delay it shows bytes read, then is erased."""
    import io

    from diag import postmortem as pm
    from diag.commands import postmortem as cli_pm

    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    inp = pm.Input(index=0, path=str(PM / "udevadm-monitor-kernel.txt"), stats=FileStats("x"))
    bar = cli_pm._Progress([inp])
    bar(10)
    assert buf.getvalue() == ""  # just started: no bar
    inp.stats.bytes_read = bar.total
    bar.start -= bar.DELAY_S
    bar(12345)
    assert "100.0%" in buf.getvalue() and "12,345 events" in buf.getvalue()
    bar.done()
    assert buf.getvalue().endswith("\r")


def test_an_endless_line_is_cut_not_held_in_memory(tmp_path: Path) -> None:
    """A 5 MiB line without newlines is cut at MAX_LINE; the lines after it are still read."""
    from diag.importers import MAX_LINE

    p = tmp_path / "big.log"
    p.write_bytes(b"x" * (5 * 1024 * 1024) + b"\nafter\n")
    st = FileStats(str(p))
    lines = list(iter_lines(str(p), st))
    assert len(lines[0]) == MAX_LINE + 1 and lines[1:] == [b"after\n"]
    assert any("cut" in n for n in st.notes)
    imp, err = sniff(str(p))
    assert imp is None and err == ""


def test_ip_oneline_monitor_output_is_read() -> None:
    """`ip -o monitor link`: continuation lines joined with a backslash on one line."""
    text = ["[2026-11-27T14:52:51.223830] 3: eth1: <BROADCAST,MULTICAST> mtu 1500 qdisc noop "
            "state DOWN group default \\    link/ether 4e:4b:10:de:fe:98 brd ff:ff:ff:ff:ff:ff"]
    st = FileStats("x")
    (e,) = list(parse_ip_monitor(text, st))
    assert isinstance(e, ev.LinkChanged) and e.mac == "4e:4b:10:de:fe:98" and st.bad_lines == 0


def test_dmesg_vfio_lines_are_matched_on_the_monotonic_clock(tmp_path: Path) -> None:
    """dmesg text: the kernel's vfio-pci request line is a signature, stamped since boot;
    recognised by content, aligned like udevadm (here by --offset)."""
    from diag import postmortem as pm
    from diag.importers.dmesg import parse_dmesg

    text = ["[   12.812000] vfio-pci 0000:01:10.0: Relaying device request to user (#10)",
            "[   12.900001] igbvf 0000:01:10.0: Intel(R) 82576 Virtual Function",
            "garbage"]
    st = FileStats("x")
    (e,) = list(parse_dmesg(text, st))
    assert isinstance(e, ev.LogLineMatched) and e.signature == "vfio-device-request"
    assert e.ts_ns == 12_812_000_000 and e.bdf == "0000:01:10.0" and e.origin == "dmesg"
    assert st.bad_lines == 1 and st.notes
    p = tmp_path / "kern.txt"
    p.write_text("\n".join(text[:2]) + "\n")
    report = pm.run([str(p)], pm.Options(offsets={"*": 1_000 * 1_000_000_000}))
    assert report.inputs[0].format == "dmesg"
    assert [x.ts_ns for x in report.timeline if x.input == 0] == [1_012_812_000_000]


def test_postmortem_timeline_says_opened_for_open_only_events() -> None:
    """A tracepoint-mode open-only event reads "opened ... for writing" in the timeline (its
    result is the fd, not bytes written), with a read-back value marked."""
    from diag import events as ev
    from diag.render import timeline
    p = ev.Process(pid=7, comm="containerd-shim")
    o = ev.SysfsWriteObserved(ts_ns=1, source="ebpf", actor=p, control="unbind", value="",
                              path="/sys/bus/pci/devices/0000:01:10.0/driver/unbind", result=3,
                              stage="open", mode="tracepoint")
    assert timeline(o) == ("containerd-shim[7] opened /sys/bus/pci/devices/0000:01:10.0/driver/"
                           "unbind for writing (ok)")
    r = ev.SysfsWriteObserved(ts_ns=1, source="ebpf", actor=p, control="driver_override",
                              value="vfio-pci", value_recovered=True, result=3, stage="open",
                              path="/sys/bus/pci/devices/0000:01:10.0/driver_override")
    assert timeline(r).endswith("for writing (ok, 'vfio-pci' read back)")
