"""The dashboard's pure formatting helpers (diag.tui.format), without Textual."""

from __future__ import annotations

from rich.text import Text

from diag import events as ev
from diag import render
from diag.core.state import DeviceView, HostState, SourceHealth
from diag.events import replace
from diag.tui import format as fmt

S = 1_000_000_000
HOST = ev.NetnsRef(inode=1, is_host=True)


def view(bdf: str, *, role: str = "none", pf: str | None = None, vf_index: int | None = None,
         driver: str | None = "igbvf", **kw: object) -> DeviceView:
    return DeviceView(device=ev.PciDevice(bdf=bdf, role=role, pf=pf, vf_index=vf_index),
                      driver=driver, **kw)  # type: ignore[arg-type]


class TestTimes:
    def test_clock_is_utc_with_milliseconds(self) -> None:
        """Event stamps show as HH:MM:SS.mmm in UTC, independent of the local zone."""
        assert fmt.clock(1_795_791_172_158_067_603) == "14:52:52.158"
        assert fmt.clock(0) == "-" and fmt.clock(None) == "-"

    def test_duration_units(self) -> None:
        """Durations pick the largest sensible unit."""
        assert [fmt.duration(n) for n in (5_000_000, 12 * S, 245 * S, 7380 * S, 3 * 86400 * S + 4 * 3600 * S)] == \
            ["5ms", "12s", "4m05s", "2h03m", "3d04h"]
        assert fmt.duration(-1) == "-"

    def test_since_is_relative_to_the_snapshot_not_the_clock(self) -> None:
        """`since` uses the snapshot's time, so replay and tests are deterministic."""
        assert fmt.since(view("0000:01:10.0", since_ns=10 * S), 25 * S) == "15s"
        assert fmt.since(view("0000:01:10.0"), 25 * S) == "start"


class TestEscaping:
    def test_text_never_interprets_markup_or_controls(self) -> None:
        """`[red]x` stays literal and ESC/BEL become visible escapes."""
        t = fmt.text("[red]x\x1b[31m\x07")
        assert isinstance(t, Text) and t.plain == "[red]x\\x1b[31m\\x07" and not t.spans

    def test_event_summary_escapes_hostile_names(self) -> None:
        """Interface and process names in summaries are made safe."""
        e = ev.LinkChanged(ts_ns=1, source="links", ifindex=3, ifname="a\x1bb", netns=HOST)
        assert "a\\x1bb" in render.stream(e)
        w = ev.SysfsWriteObserved(ts_ns=1, source="ebpf", actor=ev.Process(pid=7, comm="x\rz"),
                                  path="/sys/bus/pci/drivers_probe", control="drivers_probe",
                                  value="0000:01:10.0")
        assert "x\\x0dz[7]" in render.stream(w)

    def test_open_only_events_say_opened_not_wrote(self) -> None:
        """An open-only event (tracepoint mode's default) reads "opened ... for writing", with
        a read-back value marked, and its hostile value escaped."""
        p = ev.Process(pid=7, comm="shim")
        o = ev.SysfsWriteObserved(ts_ns=1, source="ebpf", actor=p, control="unbind", value="",
                                  path="/sys/bus/pci/devices/0000:01:10.0/driver/unbind",
                                  result=3, stage="open", mode="tracepoint")
        assert render.stream(o) == "shim[7] opened unbind for writing"
        r = ev.SysfsWriteObserved(ts_ns=1, source="ebpf", actor=p, control="driver_override",
                                  value="vfio\x1b", bdf="0000:01:10.0", value_recovered=True,
                                  path="/sys/bus/pci/devices/0000:01:10.0/driver_override",
                                  result=3, stage="open", mode="tracepoint")
        assert render.stream(r) == (
            "shim[7] opened driver_override of 0000:01:10.0 for writing ('vfio\\x1b' read back)")

    def test_tail_keeps_the_end_of_a_path(self) -> None:
        """Long paths are cut from the left."""
        assert fmt.tail("/opt/kata/share/defaults/configuration-qemu.toml", 25) == "…/configuration-qemu.toml"


class TestDevices:
    def test_pf_with_vfs_nested_and_passthrough_trees_first(self) -> None:
        """A PF is followed by its VFs in VF-index order; SR-IOV trees come before the rest."""
        devices = [
            view("0000:00:01.0", driver="virtio-pci"),
            view("0000:01:10.2", role="vf", pf="0000:01:00.0", vf_index=1),
            view("0000:01:10.0", role="vf", pf="0000:01:00.0", vf_index=0, driver="vfio-pci"),
            view("0000:01:00.0", role="pf", driver="igb"),
        ]
        order = [(v.bdf, depth) for v, depth in fmt.device_order(devices)]
        assert order == [("0000:01:00.0", 0), ("0000:01:10.0", 1), ("0000:01:10.2", 1),
                         ("0000:00:01.0", 0)]

    def test_vfio_pci_stands_out(self) -> None:
        """vfio-pci is highlighted, no driver is dim, others are plain."""
        assert [str(sp.style) for sp in fmt.driver_text("vfio-pci").spans] == [fmt.VFIO_STYLE]
        assert fmt.driver_text(None).plain == "(none)"
        assert fmt.driver_text("igbvf").style == "" and not fmt.driver_text("igbvf").spans

    def test_netdev_shows_pod_namespace(self) -> None:
        """A netdev moved into a pod's namespace shows the namespace and pod."""
        t = fmt.netdev_text(view("0000:01:10.0", netdev="eth1", netns="cni-1234", pod="web"))
        assert t.plain == "eth1@cni-1234 pod web"

    def test_a_netdev_back_in_the_host_names_no_pod(self) -> None:
        """Back on its host driver the VF's netdev is in the host: the pod it served stays in
        the Pod column, not squeezed after the netdev (the row read `eth1 po`)."""
        t = fmt.netdev_text(view("0000:01:10.0", netdev="eth1", netns="host", pod="sriov-pod"))
        assert t.plain == "eth1"


class TestHeader:
    def test_sources_listed_even_before_they_report(self) -> None:
        """uevent, links, ebpf and kata always show; unreported ones say so."""
        st = HostState(sources=(SourceHealth(name="ebpf", up=False, reason="no BTF, no headers"),))
        names = [s.name for s in fmt.sources_for_header(st)]
        assert names == ["uevent", "links", "ebpf", "kata"]
        assert fmt.source_text(fmt.sources_for_header(st)[2]).plain == "ebpf ✗ no BTF, no headers"

    def test_source_mode_and_loss(self) -> None:
        """A source's mode and its losses are shown."""
        t = fmt.source_text(SourceHealth(name="ebpf", up=True, mode="kprobe", lost=3))
        assert t.plain == "ebpf ✓ kprobe lost 3"

    def test_a_starting_source_says_so_in_one_word(self) -> None:
        """eBPF compiling for a minute: `ebpf … starting tracepoint`, not its long reason,
        which pushed the losses off the header line in a real terminal."""
        t = fmt.source_text(SourceHealth(name="ebpf", up=False, mode="tracepoint",
                                         reason="starting: compiling and attaching its programs"))
        assert t.plain == "ebpf … starting tracepoint"

    def test_kata_assumed_default_without_config(self) -> None:
        """With no Kata config seen the header says the default is assumed."""
        assert "assumed default" in fmt.kata_text(()).plain
        c = ev.KataConfig(handler="kata", path="/etc/kata-containers/configuration.toml", cold_plug_vfio="root-port")
        assert fmt.kata_text([c]).plain == "kata (go) cold_plug_vfio=root-port /etc/kata-containers/configuration.toml"
        assert "assumed default" in fmt.kata_text([ev.KataConfig(handler="default", assumed=True)]).plain

    def test_kata_header_names_the_exposure_beside_its_handler(self) -> None:
        """A handler exposed to #10162 (VFs present) says so, in red, beside its cold_plug_vfio; latent rows
        (no VF pods can be given) and other handlers say nothing."""
        from diag.core import kata_exposure as kx

        vf = ev.VfCandidate(bdf="0000:01:10.2")
        exposed = kx.assess(ev.KataHandlerFacts(handler="kata", version="3.8.0", vfs=(vf,)))
        latent = kx.assess(ev.KataHandlerFacts(handler="kata-rs", runtime="rs", version="4.1.0"))
        configs = [ev.KataConfig(handler="kata", path="/etc/kata-containers/configuration.toml"),
                   ev.KataConfig(handler="kata-rs", runtime="rs", path="/opt/kata/x.toml")]
        t = fmt.kata_text(configs, exposure=[exposed, latent])
        assert t.plain == ("kata (go) cold_plug_vfio=no-port exposed to Kata #10162 "
                           "/etc/kata-containers/configuration.toml  "
                           "kata-rs (rs) cold_plug_vfio=no-port /opt/kata/x.toml")
        start = t.plain.index("exposed")
        assert any(sp.start <= start < sp.end and "red" in str(sp.style) for sp in t.spans)

    def test_events_per_second_from_event_time(self) -> None:
        """The rate counts recent events in the last 10 s of event time."""
        recent = tuple(ev.ClockTicked(ts_ns=i * S // 10, source="t") for i in range(1, 201))
        st = HostState(ts_ns=20 * S, recent=recent)
        assert fmt.events_per_second(st) == 10.0
        assert fmt.events_per_second(HostState()) == 0.0


class TestFilter:
    E = (
        ev.DeviceBound(ts_ns=1, source="uevent", bdf="0000:01:10.0", driver="vfio-pci"),
        ev.DeviceBound(ts_ns=2, source="uevent", bdf="0000:01:10.2", driver="igbvf", synthetic=True),
        ev.SandboxStarted(ts_ns=3, source="kata", sandbox_id="abc123", pod="web"),
        ev.LinkChanged(ts_ns=4, source="links", ifindex=3, ifname="eth1", netns=HOST),
    )

    def pick(self, query: str, sandbox_of: dict[str, str] | None = None) -> list[int]:
        f = fmt.EventFilter.parse(query)
        return [e.ts_ns for e in self.E if f.matches(e, sandbox_of)]

    def test_by_device_kind_source(self) -> None:
        """dev: matches a BDF suffix or prefix; kind: a substring of the kind; source: exactly."""
        assert self.pick("dev:01:10.0") == [1]
        assert self.pick("dev:eth1") == [4]
        assert self.pick("kind:bound") == [1, 2]
        assert self.pick("source:links") == [4]

    def test_by_sandbox_directly_or_through_the_device(self) -> None:
        """sandbox: matches the event's sandbox or pod, or the sandbox its device is used by."""
        assert self.pick("sandbox:web") == [3]
        assert self.pick("sandbox:abc", {"0000:01:10.0": "abc123"}) == [1, 3]

    def test_synthetic_and_words_and_empty(self) -> None:
        """`synthetic` keeps marked events; free words match the summary; empty keeps all."""
        assert self.pick("synthetic") == [2]
        assert self.pick("vfio-pci") == [1]
        assert fmt.EventFilter.parse("  ").empty and self.pick("") == [1, 2, 3, 4]

    def test_event_line_marks_synthetic(self) -> None:
        """Synthetic events carry a SYNTH mark in the stream."""
        assert "SYNTH" in fmt.event_line(self.E[1]).plain
        assert "SYNTH" not in fmt.event_line(self.E[0]).plain


class TestFindings:
    def test_counts_and_title(self) -> None:
        """Ongoing findings are counted by severity, resolved ones separately."""
        def f(i: int, sev: ev.Severity, status: str = "open") -> ev.Finding:
            return ev.Finding(ts_ns=i, source="core", finding_id=str(i), rule="r", severity=sev,
                              summary="s", status=status)
        st = HostState(findings=(f(1, ev.Severity.CRITICAL), f(2, ev.Severity.WARNING),
                                 f(3, ev.Severity.WARNING), f(4, ev.Severity.ERROR, "resolved")))
        assert fmt.finding_counts(st) == (3, 1, {ev.Severity.CRITICAL: 1, ev.Severity.WARNING: 2})
        assert fmt.findings_title(st).plain == "Findings 3 ongoing · 1 critical · 2 warning · 1 resolved"

    def test_summary_drops_the_device_the_table_shows(self) -> None:
        """A summary that starts with its BDF loses it in the table (the Device column has it)."""
        f = ev.Finding(ts_ns=1, source="core", finding_id="1", rule="r", severity=ev.Severity.INFO,
                       summary="0000:01:10.0 (VF 0) moved", bdf="0000:01:10.0")
        assert fmt.summary_without_device(f) == "(VF 0) moved"
        assert fmt.summary_without_device(replace(f, bdf=None)) == "0000:01:10.0 (VF 0) moved"
