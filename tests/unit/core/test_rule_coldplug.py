"""Rule vfio-bind-coldplug-disabled on the lab's real Kata Go >=3.8 and 3.0-3.7 sequences."""

from __future__ import annotations

import pytest

from diag import events as ev
from diag.core.thresholds import CoreConfig
from diag.events import replace
from tests.unit.core.corelab import (
    KATA_SHIM,
    KATA_SHIM_COMM_ONLY,
    POD_NS,
    SID,
    STRANGER,
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

RULE = "vfio-bind-coldplug-disabled"
T0 = start_ns()


def _stream(phases: tuple[str, ...] = ("kata38-bind-vfio",), *, actor: ev.Process | None = KATA_SHIM,
            head: tuple[ev.Event, ...] = (), netns: ev.NetnsRef | None = None,
            vf_driver: str | None = "igbvf") -> list[ev.Event]:
    inv = inventory(T0, vf_driver=vf_driver)
    tr = tracker_for(inv)
    out: list[ev.Event] = [inv, *head]
    for p in phases:
        kw = {"netns": netns} if netns is not None else {}
        out += phase_events(p, tr, actor=actor, **kw)
    return out


def test_kata38_sequence_with_no_port_and_a_kata_shim_is_critical() -> None:
    """Go >=3.8 driver_override/unbind/drivers_probe by the Kata shim with no-port: critical,
    one finding telling the whole story in time order, predicting the QEMU bus error."""
    _, out = run(_stream(head=(kata_config(T0),)))
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.CRITICAL and f.status == "open"
    assert f.bdf == VF and f.pf == "0000:01:00.0" and f.vf_index == 0
    assert f.actor == KATA_SHIM and f.sandbox_id == SID
    assert f.netdev == "eth1" and f.netns == "host"
    kinds = [e.kind for e in f.evidence]
    assert kinds[0] == "sysfs_write_observed" and kinds[-1] == "device_bound"
    assert {"link_removed", "netdev_removed", "device_unbound", "vfio_device_added"} <= set(kinds)
    assert [e.ts_ns for e in f.evidence] == sorted(e.ts_ns for e in f.evidence)
    assert "Bus '<unknown PCIePortBusPrefix: >0' not found" in f.explanation
    assert "host=0000:01:10.0" in f.explanation
    assert 'cold_plug_vfio = "root-port"' in f.remedy and "pcie_root_port >= 1" in f.remedy
    assert ">= 3.9" in f.remedy and "runtime-rs has no such check" in f.remedy
    labels = dict(f.labels)
    assert labels["cold_plug_vfio"] == "no-port" and labels["cold_plug_assumed"] == "false"
    assert "driver_override, driver/unbind, drivers_probe" in labels["method"]
    assert f.finding_id == f"{RULE}/{VF}/{f.evidence[-1].ts_ns}"


def test_kata30_new_id_sequence_with_no_port_is_critical() -> None:
    """Go 3.0-3.7 unbind/new_id/bind (new_id names no device: matched by vendor:device) is
    critical too, and names the 3.0-3.7 method."""
    c, out = run(_stream(("kata30-bind-vfio",), head=(kata_config(T0),)))
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.CRITICAL
    assert "3.0-3.7" in dict(f.labels)["method"]
    # The explicit bind's EBUSY came after the bind uevent: it joins the evidence quietly.
    [f] = [x for x in c.snapshot().findings if x.rule == RULE]
    texts = " ".join(e.text for e in f.evidence)
    assert "new_id" in texts and "failed (-16)" in texts  # the explicit bind's real EBUSY


def test_comm_only_shim_is_recognised() -> None:
    """An actor known only by its 15-char comm `containerd-shim` counts as a Kata shim."""
    _, out = run(_stream(actor=KATA_SHIM_COMM_ONLY, head=(kata_config(T0),)))
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.CRITICAL


def test_device_of_a_sandbox_is_critical_without_an_actor() -> None:
    """No attribution, but the VF belongs to a no-port sandbox: critical, with its pod."""
    _, out = run(_stream(actor=None, head=(sandbox(T0),), netns=POD_NS))
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.CRITICAL and f.actor is None
    assert (f.pod, f.pod_namespace, f.sandbox_id) == ("web-0", "shop", SID)
    assert f.netns == POD_NS.label


def test_unknown_actor_with_assumed_default_is_a_warning() -> None:
    """No actor, no sandbox, no Kata configuration: warning, with Kata's default marked assumed."""
    _, out = run(_stream(actor=None))
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.WARNING
    assert dict(f.labels)["cold_plug_assumed"] == "true"
    assert "assumed" in f.summary


def test_non_kata_actor_is_a_warning() -> None:
    """A known actor that is not a Kata shim (and no sandbox): warning."""
    _, out = run(_stream(actor=STRANGER, head=(kata_config(T0),)))
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.WARNING and f.actor == STRANGER


@pytest.mark.parametrize("how", ["driverctl", "allow_vfio", "allow_pf"])
def test_declared_intent_is_info(how: str) -> None:
    """A driverctl override or an allow-list entry (the VF or its PF) makes it info."""
    cfg = {"driverctl": CoreConfig(driverctl_overrides=(VF,)),
           "allow_vfio": CoreConfig(allow_vfio=(VF,)),
           "allow_pf": CoreConfig(allow_vfio=("0000:01:00.0",))}[how]
    _, out = run(_stream(actor=None, head=(kata_config(T0),)), cfg)
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.INFO and "intent" in dict(f.labels)


@pytest.mark.parametrize("port", ["root-port", "bridge-port", "switch-port"])
@pytest.mark.parametrize("phase", ["kata38-bind-vfio", "kata30-bind-vfio"])
def test_enabled_cold_plug_does_not_fire(port: str, phase: str) -> None:
    """With cold_plug_vfio root-port/bridge-port/switch-port the same moves raise nothing."""
    _, out = run(_stream((phase,), head=(kata_config(T0, cold_plug=port),)))
    assert of_rule(out, RULE) == []


def test_root_port_sandbox_wins_over_a_no_port_host_default() -> None:
    """The sandbox's own effective value (root-port) wins over the host handler's no-port."""
    head = (kata_config(T0), sandbox(T0, cold_plug="root-port"))
    _, out = run(_stream(head=head))
    assert of_rule(out, RULE) == []


def test_device_already_on_vfio_at_start_is_inventory_not_a_rebind() -> None:
    """A VF on vfio-pci in the first inventory raises nothing, even when later restored."""
    _, out = run(_stream(("kata38-restore",), vf_driver="vfio-pci", head=(kata_config(T0),)))
    assert of_rule(out, RULE) == []


def test_restore_resolves_with_when_and_why() -> None:
    """BindDevicetoHost after the bind resolves the finding, saying when and why."""
    _, out = run(_stream(("kata38-bind-vfio", "kata38-restore"), head=(kata_config(T0),)))
    [f] = of_rule(out, RULE)
    assert f.status == "resolved" and f.resolved_ns is not None
    assert "vfio-pci" in f.resolved_reason
    assert f.resolved_ns > f.first_ns


def test_late_sandbox_with_root_port_resolves() -> None:
    """A sandbox discovered after the bind, using root-port, turns it into an expected cold plug."""
    events = _stream(head=(kata_config(T0),))
    events.append(sandbox(events[-1].ts_ns + 1000, cold_plug="root-port"))
    _, out = run(events)
    [f] = of_rule(out, RULE)
    assert f.status == "resolved" and "root-port" in f.resolved_reason


def test_attribution_arriving_after_the_bind_upgrades_the_same_finding() -> None:
    """The eBPF writes may reach the core after the uevents: the same finding id goes from
    warning to critical (updated), with the writes in its evidence."""
    events = _stream(head=(kata_config(T0),))
    writes = [e for e in events if isinstance(e, ev.SysfsWriteObserved)]
    others = [e for e in events if not isinstance(e, ev.SysfsWriteObserved)]
    _, in_order = run(events)
    _, late = run(others + writes)
    [a] = of_rule(in_order, RULE)
    [b] = of_rule(late, RULE)
    assert a.finding_id == b.finding_id
    assert b.status == "updated" and b.severity is ev.Severity.CRITICAL
    assert replace(a, ts_ns=0, status="") == replace(b, ts_ns=0, status="")


def test_runtime_rs_sandbox_says_runtime_rs_has_no_check() -> None:
    """For a runtime-rs sandbox the explanation says runtime-rs refuses nothing."""
    _, out = run(_stream(head=(sandbox(T0, runtime="rs"),)))
    [f] = of_rule(out, RULE)
    assert "runtime-rs has no check" in f.explanation


def test_kata30_new_id_write_seen_before_the_unbind_uevent_names_the_shim() -> None:
    """Found by the lab: uevents are stamped when read, so the shim's new_id write (inside which
    the kernel binds vfio-pci) can precede the unbind uevent; an earlier restore's writer
    (python3 clearing driver_override) must not be named instead of the shim."""
    base = _stream(("kata30-bind-vfio",), head=(kata_config(T0),))
    first_write = min(e.ts_ns for e in base if isinstance(e, ev.SysfsWriteObserved))
    new_id = next(e for e in base if isinstance(e, ev.SysfsWriteObserved) and e.control == "new_id")
    late = (ev.DeviceUnbound, ev.VfioDeviceAdded, ev.DeviceBound)
    shifted = [replace(e, ts_ns=new_id.ts_ns + 1_000 + i) if isinstance(e, late) else e
               for i, e in enumerate(base)]
    restorer = ev.Process(pid=172, comm="python3", exe="/usr/bin/python3.11")
    clear = ev.SysfsWriteObserved(
        ts_ns=first_write - 600_000_000, source="ebpf", actor=restorer,
        path=f"/sys/bus/pci/devices/{VF}/driver_override", control="driver_override", value="",
        bdf=VF, result=1, mode="kprobe")
    stream = sorted([*shifted, clear], key=lambda e: e.ts_ns)
    _, out = run(stream)
    [f] = of_rule(out, RULE)
    assert f.actor == KATA_SHIM and f.severity is ev.Severity.CRITICAL


def test_kata30_writes_arriving_after_the_bind_update_the_finding_to_the_shim() -> None:
    """Found by the lab under TCG: the eBPF records reached the core after the bind uevent
    (past the merge window), and new_id is stamped at its return, after the bind it caused.
    The finding opens naming whoever wrote first, then is updated to name the shim."""
    base = _stream(("kata30-bind-vfio",), head=(kata_config(T0),))
    writes = [e for e in base if isinstance(e, ev.SysfsWriteObserved)]
    kernel = [e for e in base if not isinstance(e, ev.SysfsWriteObserved)]
    bound = next(e for e in kernel if isinstance(e, ev.DeviceBound) and e.driver == "vfio-pci")
    late = []
    for w in writes:
        if w.control == "new_id":
            w = replace(w, ts_ns=bound.ts_ns + 7_000_000)
        elif w.control == "bind" and w.result < 0:
            w = replace(w, ts_ns=bound.ts_ns + 9_000_000)
        late.append(w)
    restorer = ev.Process(pid=170, comm="python3", exe="/usr/bin/python3.11")
    clear = ev.SysfsWriteObserved(
        ts_ns=min(w.ts_ns for w in writes) - 900_000_000, source="ebpf", actor=restorer,
        path=f"/sys/bus/pci/devices/{VF}/driver_override", control="driver_override", value="",
        bdf=VF, result=1, mode="kprobe")
    assert clear.ts_ns > T0
    upto = [e for e in kernel if e.ts_ns <= bound.ts_ns]
    after = [e for e in kernel if e.ts_ns > bound.ts_ns]
    _, out = run([*upto[:2], clear, *upto[2:], *late, *after])
    got = [f for f in out if f.rule == RULE]
    assert got[0].status == "open" and got[0].actor == restorer  # all it knew at the bind
    live = [f for f in got if f.finding_id == got[0].finding_id and f.status != "resolved"]
    assert live[-1].actor == KATA_SHIM
    assert live[-1].severity is ev.Severity.CRITICAL
    # The unexpected-actor finding raised on the early guess resolves once the shim shows up.
    odd = [f for f in out if f.rule == "vfio-bind-unexpected-actor"]
    assert odd and odd[0].actor == restorer
    assert odd[-1].status == "resolved" and "containerd-shim" in odd[-1].resolved_reason


def _open_only(e: ev.Event) -> ev.Event:
    """A write as the tracepoint mode's open-only variant reports it: the open (result: its
    fd), no value except driver_override's read back; bind/unbind/drivers_probe name no device."""
    if not isinstance(e, ev.SysfsWriteObserved):
        return e
    if e.control == "driver_override":
        return replace(e, stage="open", mode="tracepoint", result=3, value_recovered=True)
    path, driver = e.path, e.driver
    if path.endswith("/driver/unbind"):  # the source resolves the link: the driver's own file
        path, driver = "/sys/bus/pci/drivers/igbvf/unbind", "igbvf"
    return replace(e, stage="open", mode="tracepoint", result=3, value="", bdf=None, path=path,
                   driver=driver)


def test_open_only_kata38_move_recovers_each_bdf_from_the_uevent_that_follows() -> None:
    """Open-only variant: the unbind and drivers_probe opens carry no BDF; each gets the one
    named by the kernel's unbind/bind uevent after it, marked recovered, and the finding is
    the same critical one naming the shim."""
    _, out = run([_open_only(e) for e in _stream(head=(kata_config(T0),))])
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.CRITICAL and f.actor == KATA_SHIM and f.sandbox_id == SID
    texts = [e.text for e in f.evidence if e.kind == "sysfs_write_observed"]
    assert len(texts) == 3, texts
    assert any(f"drivers/igbvf/unbind for writing: ok; value '{VF}' recovered (from the unbind"
               in t for t in texts), texts
    assert any(f"drivers_probe for writing: ok; value '{VF}' recovered (from the bind" in t
               for t in texts), texts


def test_open_only_opens_delivered_after_their_uevents_still_recover() -> None:
    """eBPF records can reach the core after the uevents they caused: the opens still find
    their device, and the finding is updated to name the shim."""
    events = [_open_only(e) for e in _stream(head=(kata_config(T0),))]
    opens = [e for e in events if isinstance(e, ev.SysfsWriteObserved)]
    others = [e for e in events if not isinstance(e, ev.SysfsWriteObserved)]
    c, out = run(others + opens)
    got = of_rule(out, RULE)
    assert got[-1].actor == KATA_SHIM and got[-1].severity is ev.Severity.CRITICAL
    [f] = [x for x in c.snapshot().findings if x.rule == RULE]
    assert sum("recovered (from the" in e.text for e in f.evidence) == 2


def test_open_only_kata30_new_id_and_bind_find_their_device() -> None:
    """Open-only 3.0-3.7 sequence: the new_id open (its "vendor device" unreadable) is tied to
    the vfio-pci bind after it; the later bind open (EBUSY in truth) has no uevent after it
    and stays unattached rather than being pinned on some other move."""
    _, out = run([_open_only(e) for e in _stream(("kata30-bind-vfio",), head=(kata_config(T0),))])
    [f] = of_rule(out, RULE)
    assert f.severity is ev.Severity.CRITICAL and f.actor == KATA_SHIM
    texts = [e.text for e in f.evidence if e.kind == "sysfs_write_observed"]
    assert any("vfio-pci/new_id for writing" in t for t in texts), texts
    assert not any("vfio-pci/bind for writing" in t for t in texts), texts


def test_open_only_open_is_not_tied_to_an_unbind_long_after_it() -> None:
    """An open whose write caused nothing (ENODEV) must not claim an unrelated unbind that
    comes more than the recovery window later."""
    events = [_open_only(e) for e in _stream(head=(kata_config(T0),))]
    first_unbind = next(e for e in events if isinstance(e, ev.DeviceUnbound))
    stray = ev.SysfsWriteObserved(
        ts_ns=first_unbind.ts_ns - 2_000_000_000, source="ebpf", actor=STRANGER,
        path="/sys/bus/pci/drivers/igbvf/unbind", control="unbind", value="", driver="igbvf",
        result=3, mode="tracepoint", stage="open")
    _, out = run(sorted([*events, stray], key=lambda e: e.ts_ns))
    [f] = of_rule(out, RULE)
    assert f.actor != STRANGER
    assert not any(str(STRANGER.pid) in e.text for e in f.evidence)


def test_the_write_sequence_is_told_from_the_attributed_writes_alone() -> None:
    """The explanation names only writes in the evidence: with the unbind write not attributed
    (the demo's first recording lost it), the method says so instead of claiming it."""
    events = [e for e in _stream(head=(kata_config(T0),))
              if not (isinstance(e, ev.SysfsWriteObserved) and e.control == "unbind")]
    c, _ = run(events)
    [f] = [x for x in c.snapshot().findings if x.rule == RULE]
    method = dict(f.labels)["method"]
    writes = [e.text for e in f.evidence if e.kind == "sysfs_write_observed"]
    assert not any("unbind" in w for w in writes)
    assert "driver/unbind" not in method and "driver/unbind" not in f.explanation
    assert method.startswith("driver_override, drivers_probe")
    assert "the unbind write was not attributed" in method


def test_device_row_device_story_and_finding_name_the_same_owner() -> None:
    """One answer for who moved a VF and for which sandbox: the snapshot's device view (the
    device row and its story read it) and the finding name the same actor, sandbox and pod,
    and the driver timeline names the writer even when its record arrived after the bind."""
    events = _stream(head=(kata_config(T0),))
    writes = [e for e in events if isinstance(e, ev.SysfsWriteObserved)]
    late = [e for e in events if not isinstance(e, ev.SysfsWriteObserved)] + writes  # eBPF late
    last = max(e.ts_ns for e in late)
    late.append(sandbox(last + 1, vfs=()))
    c, _ = run(late)
    snap = c.snapshot()
    [f] = [x for x in snap.findings if x.rule == RULE]
    view = snap.device(VF)
    assert view is not None
    assert (view.actor, view.sandbox_id, view.pod, view.pod_namespace) == \
        (f.actor, f.sandbox_id, f.pod, f.pod_namespace)
    assert view.actor == KATA_SHIM and view.sandbox_id == SID and view.pod
    assert view.sandbox_running
    real = [m for m in view.moves if not m.synthetic]
    assert real and all(m.actor == KATA_SHIM for m in real)
