"""Provides rule `vf-stuck-unbound`: a VF left driverless with a host driver in driver_override.

Kata issue #13837: teardown writes the host driver to driver_override, then unbinds the VF
from vfio-pci; when QEMU still holds the VFIO group the unbind stalls and `drivers_probe` never
runs, so the VF stays with no driver at all. A normal restore passes through this state for a
few milliseconds; past CoreConfig.stuck_grace_ns it is stuck. Resolves when any driver binds,
the override is cleared, or the device goes away.
"""

from __future__ import annotations

from diag import events as ev
from diag.core.episodes import VFIO_DRIVER
from diag.core.model import DeviceRecord, Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule, Timers, device_label, is_vf
from diag.core.thresholds import NS, CoreConfig
from diag.render import actor_label


def _stuck(rec: DeviceRecord | None) -> bool:
    return (rec is not None and rec.present and rec.driver is None
            and rec.driver_override is not None and rec.driver_override != VFIO_DRIVER)


@register
class VfStuckUnbound(ConditionRule):
    """Open when a VF has had no driver but a host driver override past the grace period."""

    id = "vf-stuck-unbound"
    events = (ev.DeviceUnbound, ev.DeviceBound, ev.DeviceRemoved, ev.DeviceChanged,
              ev.SysfsWriteObserved, ev.InventoryObserved)
    ticks = True

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.timers = Timers()
        self.since: dict[str, int] = {}

    def _check(self, model: Model, bdf: str, ts_ns: int) -> list[ev.Finding]:
        rec = model.devices.get(bdf)
        if _stuck(rec) and is_vf(model, bdf):
            if bdf not in self.timers.due and bdf not in self._by_bdf:
                self.since[bdf] = ts_ns
                self.timers.set(bdf, ts_ns + self.config.stuck_grace_ns)
            return []
        if bdf in self.timers.due:
            self.timers.cancel(bdf)
            self.since.pop(bdf, None)
        if bdf not in self._by_bdf:
            return []
        if rec is None or not rec.present:
            why = "the device was removed"
        elif rec.driver is not None:
            why = f"bound to {rec.driver}"
        else:
            why = f"driver_override is now {rec.driver_override or 'cleared'}"
        return self.resolve_all(self.keys_for(bdf), ts_ns, why)

    # One method per event kind (the correlator calls them directly; `on_event` dispatches).

    def on_sysfs_write_observed(self, model: Model,
                                event: ev.SysfsWriteObserved) -> list[ev.Finding]:
        if event.control != "driver_override" or not isinstance(event.bdf, str):
            return []
        return self._check(model, event.bdf, event.ts_ns)

    def on_device_changed(self, model: Model, event: ev.DeviceChanged) -> list[ev.Finding]:
        if event.attribute != "driver_override" or not isinstance(event.bdf, str):
            return []
        return self._check(model, event.bdf, event.ts_ns)

    def on_inventory_observed(self, model: Model,
                              event: ev.InventoryObserved) -> list[ev.Finding]:
        out = []
        for d in event.devices:
            if d.driver is None or d.bdf in self._by_bdf:
                out.extend(self._check(model, d.bdf, event.ts_ns))
        return out

    def on_device_bound(self, model: Model, event: ev.DeviceBound) -> list[ev.Finding]:
        bdf = event.bdf
        if not event.synthetic and bdf not in self.timers.due and bdf not in self._by_bdf:
            return []  # bound (the model applied it): not stuck, nothing to stop or resolve
        return self._check(model, bdf, event.ts_ns)

    def on_device_unbound(self, model: Model, event: ev.DeviceUnbound) -> list[ev.Finding]:
        return self._check(model, event.bdf, event.ts_ns)

    def on_device_removed(self, model: Model, event: ev.DeviceRemoved) -> list[ev.Finding]:
        return self._check(model, event.bdf, event.ts_ns)

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        out = []
        for bdf in self.timers.pop_due(now_ns):
            since = self.since.pop(bdf, now_ns)
            rec = model.devices.get(bdf)
            if rec is None or not _stuck(rec):
                continue
            out.append(self._open(model, rec, since, now_ns))
        return out

    def _open(self, model: Model, rec: DeviceRecord, since: int, now_ns: int) -> ev.Finding:
        bdf = rec.device.bdf
        ov = rec.driver_override or "?"
        group = rec.device.iommu_group
        holders = sorted(model.vfio_holders.get(group, {}).values(), key=lambda p: p.pid) \
            if group is not None else []
        held = (f" /dev/vfio/{group} is still held by "
                f"{', '.join(actor_label(p) for p in holders)}, which blocks the unbind."
                if holders else "")
        ep = model.episode(bdf)
        grace = self.config.stuck_grace_ns // NS
        return self.open(
            model, bdf, ts_ns=now_ns, trigger_ns=since, bdf=bdf, episode=ep,
            severity=ev.Severity.ERROR,
            summary=(f"{device_label(model, bdf)} has had no driver for over {grace}s although "
                     f"driver_override={ov}: the restore to {ov} never finished"),
            actor=ep.actor if ep else None,
            explanation=(
                f"driver_override names {ov} but nothing probed the device. Kata's restore "
                f"(BindDevicetoHost) writes the override, unbinds from vfio-pci, then writes "
                f"drivers_probe; when QEMU still holds the VFIO group the unbind stalls and "
                f"drivers_probe never runs (Kata issue #13837, since 4.0.0).{held}"
            ),
            remedy=(
                f"Make sure no VMM holds the VF's VFIO group (lsof /dev/vfio/{group if group is not None else '<group>'}), "
                f"then: echo {bdf} > /sys/bus/pci/drivers_probe. Kata PR #13856 restores the VF "
                "only after QEMU is gone."
            ),
            labels=(("driver_override", ov), ("since_ns", str(since)),
                    ("group", "" if group is None else str(group))),
        )
