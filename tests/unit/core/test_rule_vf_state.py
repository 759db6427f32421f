"""Rules vf-stranded-on-vfio, vf-stuck-unbound and vf-netdev-lost on the lab's real moves."""

from __future__ import annotations

from diag import events as ev
from diag.core.thresholds import NS
from tests.unit.core.corelab import (
    KATA_SHIM,
    POD_NS,
    VF,
    inventory,
    kata_config,
    of_rule,
    phase_events,
    run,
    sandbox,
    start_ns,
    tracker_for,
)

T0 = start_ns()
QEMU = ev.Process(pid=5150, comm="qemu-system-x86", exe="/opt/kata/bin/qemu-system-x86_64")


def _bind(vf_driver: str | None = "igbvf", **kw: object) -> tuple[list[ev.Event], object]:
    inv = inventory(T0, vf_driver=vf_driver)
    tr = tracker_for(inv)
    return [inv, kata_config(T0, cold_plug="root-port"),
            *phase_events("kata38-bind-vfio", tr, actor=KATA_SHIM, **kw)], tr  # type: ignore[arg-type]


# ---- vf-stranded-on-vfio ----------------------------------------------------------------------

STRANDED = "vf-stranded-on-vfio"


def test_unheld_vf_on_vfio_past_grace_is_stranded() -> None:
    """A VF bound to vfio-pci with no sandbox and no holder opens after the grace period."""
    events, _ = _bind()
    bind_ns = events[-1].ts_ns
    _, before = run(events, until_ns=bind_ns + 59 * NS)
    assert of_rule(before, STRANDED) == []
    _, out = run(events, until_ns=bind_ns + 61 * NS)
    [f] = of_rule(out, STRANDED)
    assert f.severity is ev.Severity.ERROR and f.bdf == VF
    assert "/dev/vfio/5" in f.summary and "#13790" in f.explanation
    assert f.finding_id.endswith(f"/{bind_ns}")
    assert "echo igbvf > /sys/bus/pci/devices/0000:01:10.0/driver_override" in f.remedy


def test_stranded_vf_later_restored_resolves() -> None:
    """The stranded VF is given back to igbvf (Kata's restore): the finding resolves with why."""
    events, tr = _bind()
    c, out = run(events, until_ns=events[-1].ts_ns + 61 * NS)
    restore = phase_events("kata38-restore", tr, actor=KATA_SHIM)  # type: ignore[arg-type]
    for e in restore:  # the recorded restore, fed after the grace has already passed
        out.extend(c.feed(e))
    [f] = of_rule(out, STRANDED)
    assert f.status == "resolved" and "unbound from vfio-pci" in f.resolved_reason


def test_holder_appearing_resolves_and_prevents() -> None:
    """A process holding /dev/vfio/5 resolves an open finding, and prevents one before grace."""
    events, _ = _bind()
    bind_ns = events[-1].ts_ns
    c, out = run(events, until_ns=bind_ns + 61 * NS)
    out += c.feed(ev.VfioGroupHeld(ts_ns=bind_ns + 62 * NS, source="kata", group=5, holder=QEMU))
    [f] = of_rule(out, STRANDED)
    assert f.status == "resolved" and "qemu-system-x86[5150]" in f.resolved_reason
    held = [*events, ev.VfioGroupHeld(ts_ns=bind_ns + NS, source="kata", group=5, holder=QEMU)]
    _, out2 = run(held, until_ns=bind_ns + 120 * NS)
    assert of_rule(out2, STRANDED) == []


def test_vf_of_a_live_sandbox_is_not_stranded() -> None:
    """A VF listed by a live sandbox is in use, not stranded."""
    events, _ = _bind()
    events.insert(1, sandbox(T0, cold_plug="root-port"))
    _, out = run(events, until_ns=events[-1].ts_ns + 120 * NS)
    assert of_rule(out, STRANDED) == []


def test_vf_on_vfio_at_start_unheld_is_stranded_with_inventory_evidence() -> None:
    """A VF already on vfio-pci when the agent starts, unheld, is reported after the grace."""
    _, out = run([inventory(T0, vf_driver="vfio-pci")], until_ns=T0 + 61 * NS)
    [f] = of_rule(out, STRANDED)
    assert f.evidence[0].kind == "inventory_observed"


# ---- vf-stuck-unbound -----------------------------------------------------------------------------

STUCK = "vf-stuck-unbound"


def _stalled_restore() -> tuple[list[ev.Event], list[ev.Event]]:
    """The real restore cut after the unbind (drivers_probe never ran, as in Kata #13837);
    returns (events up to the unbind, the rest)."""
    events, tr = _bind()
    restore = phase_events("kata38-restore", tr, actor=KATA_SHIM)  # type: ignore[arg-type]
    cut = next(i for i, e in enumerate(restore) if isinstance(e, ev.DeviceUnbound)) + 1
    head = [e for e in restore[:cut]
            if not (isinstance(e, ev.SysfsWriteObserved) and e.control == "drivers_probe")]
    return events + head, restore[cut:]


def test_restore_stalled_after_unbind_is_stuck() -> None:
    """No driver and driver_override=igbvf past the grace: stuck, naming #13837."""
    head, _ = _stalled_restore()
    _, out = run(head, until_ns=head[-1].ts_ns + 31 * NS)
    [f] = of_rule(out, STUCK)
    assert f.severity is ev.Severity.ERROR and "driver_override=igbvf" in f.summary
    assert "#13837" in f.explanation and "drivers_probe" in f.remedy


def test_stuck_vf_resolves_when_probed() -> None:
    """The rest of the recorded restore (add net, bind igbvf) resolves it."""
    head, tail = _stalled_restore()
    c, out = run(head, until_ns=head[-1].ts_ns + 31 * NS)
    for e in tail:
        out += c.feed(e)
    [f] = of_rule(out, STUCK)
    assert f.status == "resolved" and "bound to igbvf" in f.resolved_reason


def test_normal_restore_passes_through_unbound_without_a_finding() -> None:
    """The real restore spends 33 ms unbound with override=igbvf: no finding."""
    events, tr = _bind()
    events += phase_events("kata38-restore", tr, actor=KATA_SHIM)  # type: ignore[arg-type]
    _, out = run(events, until_ns=events[-1].ts_ns + 120 * NS)
    assert of_rule(out, STUCK) == []


def test_unbound_with_vfio_override_is_not_stuck() -> None:
    """Between unbind and drivers_probe of the bind the override is vfio-pci: not stuck."""
    events, _ = _bind()
    cut = next(i for i, e in enumerate(events) if isinstance(e, ev.DeviceUnbound)) + 1
    _, out = run(events[:cut], until_ns=events[cut - 1].ts_ns + 120 * NS)
    assert of_rule(out, STUCK) == []


# ---- vf-netdev-lost ----------------------------------------------------------------------------------

LOST = "vf-netdev-lost"


def _unbound_only(netns: ev.NetnsRef = POD_NS) -> list[ev.Event]:
    """The real bind phase cut after the unbind (nobody bound the VF again)."""
    inv = inventory(T0)
    tr = tracker_for(inv)
    evs = phase_events("kata38-bind-vfio", tr, netns=netns)
    cut = next(i for i, e in enumerate(evs) if isinstance(e, ev.DeviceUnbound)) + 1
    return [inv, sandbox(T0, cold_plug="root-port", vfs=()), *evs[:cut]]


def test_unbound_vf_without_netdev_names_namespace_and_pod() -> None:
    """Unbound and still without its netdev after the grace: names netns and pod."""
    events = _unbound_only()
    _, out = run(events, until_ns=events[-1].ts_ns + 6 * NS)
    [f] = of_rule(out, LOST)
    assert f.netdev == "eth1" and f.netns == POD_NS.label
    assert (f.pod, f.pod_namespace) == ("web-0", "shop")
    assert f.severity is ev.Severity.ERROR
    assert "eth1" in f.summary and "shop/web-0" in f.summary


def test_netdev_back_resolves() -> None:
    """When a network driver binds again and the netdev returns, the finding resolves."""
    events = _unbound_only(netns=POD_NS)
    c, out = run(events, until_ns=events[-1].ts_ns + 6 * NS)
    t = events[-1].ts_ns + 7 * NS
    out += c.feed(ev.NetdevAdded(ts_ns=t, source="uevent", bdf=VF, ifname="eth1", ifindex=5))
    out += c.feed(ev.DeviceBound(ts_ns=t + 1, source="uevent", bdf=VF, driver="igbvf"))
    [f] = of_rule(out, LOST)
    assert f.status == "resolved" and "eth1 is back" in f.resolved_reason


def test_no_netdev_lost_for_round_trips_vfio_or_vf_destroy() -> None:
    """A full bind+restore, a bind to vfio-pci (told by the vfio rules) and sriov_numvfs=0
    raise no vf-netdev-lost."""
    inv = inventory(T0)
    tr = tracker_for(inv)
    evs = [inv, kata_config(T0, cold_plug="root-port")]
    for p in ("kata38-bind-vfio", "kata38-restore", "clear-override", "kata30-bind-vfio",
              "kata30-restore", "sriov-destroy"):
        evs += phase_events(p, tr, actor=KATA_SHIM)
    _, out = run(evs, until_ns=evs[-1].ts_ns + 600 * NS)
    assert of_rule(out, LOST) == []
