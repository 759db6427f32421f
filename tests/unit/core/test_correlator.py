"""The correlator as a whole: deterministic, order-tolerant, synthetic-aware, bounded."""

from __future__ import annotations

from diag import codec
from diag import events as ev
from diag.core.correlator import Correlator
from diag.core.thresholds import NS, CoreConfig
from diag.events import replace
from diag.sources.uevent.decode import decode_uevent
from tests.fixtures.dumps import dump_path, load_dump
from tests.unit.core.corelab import (
    KATA_SHIM,
    VF,
    final,
    inventory,
    kata_config,
    phase_events,
    run,
    start_ns,
    tracker_for,
)

T0 = start_ns()
PHASES = ("kata38-bind-vfio", "kata38-restore", "clear-override", "kata30-bind-vfio",
          "kata30-restore", "sriov-destroy")


def _session(link_delay_ns: int = 0) -> list[ev.Event]:
    inv = inventory(T0)
    tr = tracker_for(inv)
    out: list[ev.Event] = [inv, kata_config(T0)]
    for p in PHASES:
        out += phase_events(p, tr, actor=KATA_SHIM, link_delay_ns=link_delay_ns)
    return out


def _lines(findings: list[ev.Finding]) -> list[bytes]:
    return [codec.dumps(f) for f in findings]


def test_same_events_twice_give_identical_findings() -> None:
    """Determinism: two correlators fed the same stream emit byte-identical findings."""
    events = _session()
    end = events[-1].ts_ns + 700 * NS
    _, a = run(events, until_ns=end)
    _, b = run(events, until_ns=end)
    assert a and _lines(a) == _lines(b)


def test_arrival_order_of_uevents_and_link_events_does_not_change_findings() -> None:
    """Link events reaching the core after the next PCI uevent of the same move (a merge window
    too short for the skew) end in the same findings: same ids, same evidence in time order."""
    events = _session()
    late: list[ev.Event] = []
    reordered: list[ev.Event] = []
    for e in events:
        if isinstance(e, (ev.LinkRemoved, ev.LinkChanged)):
            late.append(e)
        else:
            if isinstance(e, (ev.DeviceBound, ev.DeviceUnbound)) and late:
                reordered.append(e)
                reordered.extend(late)
                late = []
                continue
            reordered.append(e)
    reordered.extend(late)
    assert reordered != events
    end = events[-1].ts_ns + 700 * NS
    _, a = run(events, until_ns=end)
    _, b = run(reordered, until_ns=end)

    def state(out: list[ev.Finding]) -> dict[str, tuple[object, ...]]:
        return {k: (f.rule, f.severity, f.summary, f.status, f.evidence, f.netdev, f.netns,
                    f.resolved_reason) for k, f in final(out).items()}

    assert state(a) == state(b)
    # Mid-stream too: after the first bind's move, snapshots agree on every finding.
    cut = next(i for i, e in enumerate(events) if isinstance(e, ev.DeviceBound)) + 4
    keep = set(map(id, events[:cut]))
    sa, _ = run(events[:cut])
    sb, _ = run([e for e in reordered if id(e) in keep])
    assert [replace(f, ts_ns=0, status="") for f in sa.snapshot().findings] == \
        [replace(f, ts_ns=0, status="") for f in sb.snapshot().findings]


def test_the_two_recorded_socket_orders_give_the_same_findings() -> None:
    """The lab saw RTM_DELLINK before and after `remove net`: both orders (shifting the link
    stamps by 1 ms within the merge window) give the same finding ids, rules and severities."""
    end = _session()[-1].ts_ns + 700 * NS
    _, a = run(_session(), until_ns=end)
    _, b = run(_session(link_delay_ns=1_000_000), until_ns=end)

    def shape(out: list[ev.Finding]) -> list[tuple[object, ...]]:
        return sorted((k, f.rule, f.severity, f.status, f.netdev, f.summary)
                      for k, f in final(out).items())

    assert shape(a) == shape(b)


def _synthetic(phase: str, tr: object) -> list[ev.Event]:
    out = []
    for r in load_dump(dump_path("uevent", phase)):
        e = decode_uevent(r.data + b"SYNTH_UUID=0\0", r.t_real_ns)
        if e is not None:
            assert e.synthetic
            out.append(tr.apply(e))  # type: ignore[attr-defined]
    return out


def test_synthetic_uevents_make_a_synthetic_finding() -> None:
    """A move told by synthetic uevents (SYNTH_UUID) raises a finding marked synthetic, leaves
    the device state as it was (nothing really moved), and resolves on the synthetic restore."""
    inv = inventory(T0)
    tr = tracker_for(inv)
    events: list[ev.Event] = [inv, kata_config(T0), *_synthetic("kata38-bind-vfio", tr)]
    c, out = run(events)
    [f] = [f for f in final(out).values() if f.rule == "vfio-bind-coldplug-disabled"]
    assert f.synthetic and f.summary.endswith("[synthetic]")
    assert any("[synthetic]" in e.text for e in f.evidence)
    assert c.model.devices[VF].driver == "igbvf" and c.model.devices[VF].netdev == "eth1"
    for e in _synthetic("kata38-restore", tr):
        out += c.feed(e)
    [f] = [f for f in final(out).values() if f.rule == "vfio-bind-coldplug-disabled"]
    assert f.status == "resolved"


def test_recorded_findings_in_a_journal_are_not_reapplied() -> None:
    """Replaying a journal that holds the live agent's findings recomputes, never re-applies."""
    events = _session()
    _, out = run(events)
    c = Correlator()
    assert all(c.feed(f) == [] for f in out)


def test_memory_stays_bounded_over_many_moves() -> None:
    """10,000 moves of one VF keep per-device history, episodes and rule state bounded."""
    cfg = CoreConfig(history_per_device=16, flapping_moves=300)
    c = Correlator(cfg)
    c.feed(inventory(T0))
    t = T0
    for i in range(10_000):
        t += NS // 10
        drv = "vfio-pci" if i % 2 == 0 else "igbvf"
        c.feed(ev.DeviceUnbound(ts_ns=t, source="uevent", bdf=VF))
        c.feed(ev.DeviceBound(ts_ns=t + 1, source="uevent", bdf=VF, driver=drv))
    rec = c.model.devices[VF]
    assert len(rec.moves) <= 16 and len(rec.links) <= 16
    assert len(c.model.episodes[VF].events) <= 16
    assert len(c.model.episodes) <= len(c.model.devices)
    snap = c.snapshot()
    assert len(snap.recent) <= cfg.recent_events
    assert len(snap.findings) <= len(c.active) + cfg.resolved_kept
    flap = next(r for r in c.rules if r.id == "driver-flapping")
    assert len(flap.moves[VF]) <= 300  # bounded whatever the rate (a flap is open by then)


def test_snapshot_lists_active_findings_first_with_counts() -> None:
    """The snapshot carries active findings (severity first) and per-rule counts."""
    c, _ = run(_session()[:40])
    snap = c.snapshot()
    assert snap.findings and snap.findings[0].active
    assert sum(n for _, _, n in snap.counts_by_rule) == len(snap.active_findings)


def test_disabled_rule_and_severity_override() -> None:
    """core.disabled_rules removes a rule; core.severity_overrides pins its severity."""
    events = _session()[:40]
    _, out = run(events, CoreConfig(disabled_rules=("vfio-bind-coldplug-disabled",)))
    assert not [f for f in out if f.rule == "vfio-bind-coldplug-disabled"]
    _, out = run(events, CoreConfig(
        severity_overrides=(("vfio-bind-coldplug-disabled", "warning"),)))
    fs = [f for f in out if f.rule == "vfio-bind-coldplug-disabled"]
    assert fs and all(f.severity is ev.Severity.WARNING for f in fs)
    assert replace(fs[0], severity=ev.Severity.CRITICAL).severity is ev.Severity.CRITICAL


def test_open_only_unbinds_of_two_vfs_at_once_go_to_the_device_each_named() -> None:
    """Two writers open `devices/<bdf>/driver/unbind` of two VFs a millisecond apart and the
    kernel's unbinds come in the other order: each open is recovered with the device its path
    names, not merely the oldest waiting open."""
    a, b = "0000:01:10.0", "0000:01:10.2"
    inv = ev.InventoryObserved(ts_ns=T0, source="sysfs", devices=(
        ev.PciDevice(bdf=a, driver="igbvf", vendor="8086", device="10ca"),
        ev.PciDevice(bdf=b, driver="igbvf", vendor="8086", device="10ca")))
    pa, pb = ev.Process(pid=10, comm="writer-a"), ev.Process(pid=20, comm="writer-b")

    def opened(bdf: str, who: ev.Process, ts: int) -> ev.SysfsWriteObserved:
        return ev.SysfsWriteObserved(
            ts_ns=ts, source="ebpf", actor=who, path=f"/sys/bus/pci/devices/{bdf}/driver/unbind",
            control="unbind", value="", result=3, mode="tracepoint", stage="open")

    t = T0 + NS
    stream = [inv, opened(b, pb, t), opened(a, pa, t + 1_000_000),
              ev.DeviceUnbound(ts_ns=t + 5_000_000, source="uevent", bdf=a, previous_driver="igbvf"),
              ev.DeviceUnbound(ts_ns=t + 6_000_000, source="uevent", bdf=b, previous_driver="igbvf")]
    for order in (stream, [stream[0], *stream[3:], *stream[1:3]]):  # opens first, or last
        c, _ = run(order)
        eps = c.model.episodes
        assert [p.comm for p in eps[a].actors] == ["writer-a"], order
        assert [p.comm for p in eps[b].actors] == ["writer-b"], order


def test_a_device_keeps_naming_the_pod_of_a_sandbox_that_has_stopped() -> None:
    """After the #10162 rollback the sandbox stops; the VF its shim moved still names that pod
    (and says the sandbox is gone), so the row agrees with the resolved findings about it."""
    from tests.conftest import FIXTURES

    journal = FIXTURES / "journals" / "lab-demo-story.jsonl"
    core = Correlator()
    with journal.open("rb") as fh:
        for rec in codec.iter_records(fh, codec.ReadStats()):
            if isinstance(rec, ev.Event) and not isinstance(rec, ev.Finding):
                core.feed(rec)
    state = core.snapshot()
    vf = state.device("0000:01:10.0")
    assert vf is not None and vf.driver == "igbvf"
    assert (vf.pod_namespace, vf.pod) == ("default", "sriov-pod")
    assert vf.sandbox_id and vf.sandbox_id.startswith("015f1c2e8a9b") and not vf.sandbox_running


class _Recorder:
    """A rule that records which of its entry points each event reached."""

    id = "recorder"
    events = None
    ticks = False
    resync_events = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def on_event(self, model: object, event: ev.Event) -> list[ev.Finding]:
        self.calls.append(("on_event", event.kind))
        return []

    def on_device_bound(self, model: object, event: ev.DeviceBound) -> list[ev.Finding]:
        self.calls.append(("on_device_bound", event.kind))
        return []

    def on_tick(self, model: object, now_ns: int) -> list[ev.Finding]:
        return []


def test_a_rule_gets_each_event_once_by_its_kind_method_resyncs_included() -> None:
    """`on_<kind>` takes its kind instead of on_event; other kinds, and a resync event of the
    kind (offered again to resync rules), still reach the rule exactly once."""
    from diag.testing import bound, unbound

    rule = _Recorder()
    c = Correlator(rules=[rule])
    c.feed(bound("0000:01:10.0", "igbvf", 1))
    c.feed(unbound("0000:01:10.0", 2))
    c.feed(replace(bound("0000:01:10.0", "vfio-pci", 3), resync=True))
    assert rule.calls == [("on_device_bound", "device_bound"), ("on_event", "device_unbound"),
                          ("on_device_bound", "device_bound")]


def test_a_timed_rule_is_ticked_only_once_its_own_deadline_passed() -> None:
    """Another rule's earlier deadline wakes the core, not every timed rule."""
    from diag.core.rules._base import Timers
    from diag.testing import tick

    class Timed:
        events = ()
        ticks = True

        def __init__(self, rid: str, at: int) -> None:
            self.id, self.timers, self.ticked = rid, Timers(), []
            self.timers.set(rid, at)

        def on_event(self, model: object, event: ev.Event) -> list[ev.Finding]:
            return []

        def on_tick(self, model: object, now_ns: int) -> list[ev.Finding]:
            self.ticked.append(now_ns)
            self.timers.pop_due(now_ns)
            return []

    early, late = Timed("early", 10), Timed("late", 100)
    c = Correlator(rules=[early, late])
    c.feed(tick(5))
    c.feed(tick(20))
    c.feed(tick(150))
    assert early.ticked == [20]
    assert late.ticked == [150]
