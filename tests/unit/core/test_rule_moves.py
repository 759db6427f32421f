"""Rules vfio-bind-unexpected-actor, driver-flapping, iommu-group-not-viable and event-loss."""

from __future__ import annotations

from diag import events as ev
from diag.core.thresholds import NS, CoreConfig
from diag.events import replace
from tests.unit.core.corelab import (
    KATA_SHIM,
    OPERATOR,
    STRANGER,
    VF,
    VF2,
    inventory,
    kata_config,
    of_rule,
    phase_events,
    run,
    start_ns,
    tracker_for,
)

T0 = start_ns()


def _bind(actor: ev.Process | None) -> list[ev.Event]:
    inv = inventory(T0)
    tr = tracker_for(inv)
    return [inv, kata_config(T0, cold_plug="root-port"),
            *phase_events("kata38-bind-vfio", tr, actor=actor)]


# ---- vfio-bind-unexpected-actor -----------------------------------------------------------------

ACTOR = "vfio-bind-unexpected-actor"


def test_stranger_binding_to_vfio_is_flagged() -> None:
    """python3 (not an expected actor) steering the VF to vfio-pci opens a warning naming it."""
    _, out = run(_bind(STRANGER))
    [f] = of_rule(out, ACTOR)
    assert f.severity is ev.Severity.WARNING and f.actor == STRANGER
    assert "python3[777]" in f.summary and "bash < sshd" in f.explanation


def test_expected_actors_are_not_flagged() -> None:
    """The Kata shim and the SR-IOV config daemon are expected; no attribution, no finding."""
    for actor in (KATA_SHIM, OPERATOR, None):
        _, out = run(_bind(actor))
        assert of_rule(out, ACTOR) == [], actor


def test_configured_actor_is_accepted() -> None:
    """Adding the exe basename to core.expected_actors silences it."""
    _, out = run(_bind(STRANGER), CoreConfig(expected_actors=("python3.11",)))
    assert of_rule(out, ACTOR) == []


def test_write_arriving_after_the_bind_opens_with_the_bind_time() -> None:
    """The attribution reaching the core after the uevent still opens, keyed on the bind."""
    events = _bind(STRANGER)
    writes = [e for e in events if isinstance(e, ev.SysfsWriteObserved)]
    rest = [e for e in events if not isinstance(e, ev.SysfsWriteObserved)]
    _, a = run(events)
    _, b = run(rest + writes)
    [fa] = of_rule(a, ACTOR)
    [fb] = of_rule(b, ACTOR)
    assert fa.finding_id == fb.finding_id


# ---- driver-flapping ----------------------------------------------------------------------------------

FLAP = "driver-flapping"
ALL_MOVES = ("kata38-bind-vfio", "kata38-restore", "clear-override", "kata30-bind-vfio",
             "kata30-restore")


def test_four_real_moves_in_the_window_flap_and_name_alternating_actors() -> None:
    """The lab's four binds in 3 s, by Kata then by the operator, open a flap naming both."""
    inv = inventory(T0)
    tr = tracker_for(inv)
    events: list[ev.Event] = [inv, kata_config(T0, cold_plug="root-port")]
    for p in ALL_MOVES:
        events += phase_events(p, tr, actor=KATA_SHIM if p.startswith("kata38") else OPERATOR)
    last = events[-1].ts_ns
    _, out = run(events, until_ns=last + 121 * NS)
    [f] = of_rule(out, FLAP)
    labels = dict(f.labels)
    assert labels["count"] == "4" and labels["drivers"] == "vfio-pci,igbvf"
    assert "containerd-shim[4242]" in f.summary and "sriov-network-c[900]" in f.summary
    assert f.status == "resolved" and "no driver move for 120s" in f.resolved_reason


def test_flap_evidence_is_in_time_order_when_its_moves_overflow_their_stories() -> None:
    """With 4 lines kept per move (each story ends with its `evidence_dropped` line), every
    record of the flap still tells the moves in time order, as the union of their stories."""
    inv = inventory(T0)
    tr = tracker_for(inv)
    events: list[ev.Event] = [inv, kata_config(T0, cold_plug="root-port")]
    for p in ALL_MOVES:
        events += phase_events(p, tr, actor=KATA_SHIM if p.startswith("kata38") else OPERATOR)
    _, out = run(events, CoreConfig(history_per_device=4), until_ns=events[-1].ts_ns + 121 * NS)
    flaps = [f for f in out if f.rule == FLAP]
    assert [f.status for f in flaps] == ["open", "resolved"]
    for f in flaps:
        assert any(x.kind == "evidence_dropped" for x in f.evidence)
        assert list(f.evidence) == sorted(f.evidence), f.status


def test_one_round_trip_does_not_flap() -> None:
    """A single bind and restore (two moves) is no flap."""
    inv = inventory(T0)
    tr = tracker_for(inv)
    events: list[ev.Event] = [inv]
    for p in ALL_MOVES[:2]:
        events += phase_events(p, tr, actor=KATA_SHIM)
    _, out = run(events)
    assert of_rule(out, FLAP) == []


# ---- iommu-group-not-viable -------------------------------------------------------------------------

IOMMU = "iommu-group-not-viable"


def _shared_group_inventory() -> ev.InventoryObserved:
    """The lab inventory with VF2 moved into VF's IOMMU group 5 (the lab gives each VF its own;
    on hosts without ACS, functions share one)."""
    inv = inventory(T0)
    devs = tuple(replace(d, iommu_group=5) if d.bdf == VF2 else d for d in inv.devices)
    return replace(inv, devices=devs)


def test_vfio_member_with_a_host_driver_sibling_is_not_viable() -> None:
    """VF on vfio-pci while VF2 in the same group stays on igbvf: predicts QEMU's error."""
    inv = _shared_group_inventory()
    tr = tracker_for(inv)
    events = [inv, *phase_events("kata38-bind-vfio", tr, actor=KATA_SHIM)]
    events += phase_events("kata38-restore", tr, actor=KATA_SHIM)
    _, out = run(events)
    [f] = of_rule(out, IOMMU)
    assert "group 5 is not viable" in f.summary and "0000:01:10.2 on igbvf" in f.summary
    assert f.status == "resolved"


def test_own_group_is_viable() -> None:
    """With the lab's real groups (one VF per group) nothing is raised."""
    _, out = run(_bind(KATA_SHIM))
    assert of_rule(out, IOMMU) == []


def test_not_viable_at_start_is_reported() -> None:
    """A non-viable group already present at start is reported from the inventory."""
    inv = _shared_group_inventory()
    devs = tuple(replace(d, driver="vfio-pci") if d.bdf == VF else d for d in inv.devices)
    _, out = run([replace(inv, devices=devs)])
    [f] = of_rule(out, IOMMU)
    assert f.bdf == VF


# ---- event-loss ---------------------------------------------------------------------------------------

LOSS = "event-loss"


def test_loss_then_resync_says_which_how_many_and_what_changed() -> None:
    """ENOBUFS on the uevent socket, then a resync that found the VF on vfio-pci."""
    inv = inventory(T0)
    events: list[ev.Event] = [
        inv,
        ev.EventsLost(ts_ns=T0 + NS, source="uevent", lost_source="uevent", count=12, reason="ENOBUFS"),
        ev.EventsLost(ts_ns=T0 + 2 * NS, source="uevent", lost_source="uevent", count=3, reason="ENOBUFS"),
        ev.Resynced(ts_ns=T0 + 3 * NS, source="uevent", resynced_source="uevent", changes=1),
        ev.DeviceBound(ts_ns=T0 + 3 * NS, source="uevent", resync=True, bdf=VF, driver="vfio-pci",
                       previous_driver="igbvf"),
    ]
    _, out = run(events, until_ns=T0 + 30 * NS)
    [f] = of_rule(out, LOSS)
    assert "uevent lost 15 events" in f.summary
    assert f.status == "resolved" and "1 change(s)" in f.resolved_reason
    assert "0000:01:10.0 bound to vfio-pci" in f.resolved_reason


def test_resync_without_change_resolves_at_once_and_no_loss_no_finding() -> None:
    """A resync that found nothing resolves immediately; without a loss nothing opens."""
    events = [ev.EventsLost(ts_ns=T0, source="links", lost_source="links", reason="ENOBUFS"),
              ev.Resynced(ts_ns=T0 + 1, source="links", resynced_source="links", changes=0)]
    _, out = run(events)
    [f] = of_rule(out, LOSS)
    assert "unknown number" in f.summary and f.status == "resolved"
    _, out2 = run(_bind(KATA_SHIM))
    assert of_rule(out2, LOSS) == []
