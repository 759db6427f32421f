"""Provides rule `iommu-group-not-viable`: a device on vfio-pci shares its IOMMU group with a
device still on another driver.

VFIO hands a whole IOMMU group to one user: every member must be on vfio-pci or unbound
(bridges and pci-stub aside), or QEMU fails with `vfio <BDF>: group N is not viable`. Kata
passes every device of the group (GetAllVFIODevicesFromIOMMUGroup). Needs group membership:
PciDevice.iommu_group of every device, from the inventory.
"""

from __future__ import annotations

from diag import events as ev
from diag.core.episodes import VFIO_DRIVER
from diag.core.model import DeviceRecord, Model
from diag.core.rules import register
from diag.core.rules._base import HOST_RESTING_DRIVERS, ConditionRule, device_label
from diag.core.thresholds import CoreConfig


def _offends(rec: DeviceRecord) -> bool:
    if not rec.present or rec.driver is None or rec.driver in HOST_RESTING_DRIVERS:
        return False
    # Host and PCI bridges stay with their drivers; Kata skips them too.
    return not rec.device.class_code.startswith(("0600", "0604"))


@register
class IommuGroupNotViable(ConditionRule):
    """Open per IOMMU group that has a member on vfio-pci and a member on a host driver."""

    id = "iommu-group-not-viable"
    events = (ev.DeviceBound, ev.DeviceUnbound, ev.DeviceRemoved, ev.InventoryObserved,
              ev.VfioDeviceAdded)

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.by_group: dict[int, str] = {}

    # One method per event kind (the correlator calls them directly; `on_event` dispatches).

    def on_inventory_observed(self, model: Model,
                              event: ev.InventoryObserved) -> list[ev.Finding]:
        groups = sorted({d.iommu_group for d in event.devices
                         if d.iommu_group is not None and d.driver == VFIO_DRIVER}
                        | set(self.by_group))
        out = []
        for g in groups:
            out.extend(self._evaluate(model, g, event.ts_ns))
        return out

    def _device(self, model: Model, event: ev.DeviceBound | ev.DeviceUnbound | ev.DeviceRemoved
                | ev.VfioDeviceAdded) -> list[ev.Finding]:
        bdf = event.bdf
        rec = model.devices.get(bdf) if bdf is not None else None
        if rec is None:
            return []
        group = rec.device.iommu_group
        if group is None or (len(model.groups.get(group, ())) < 2
                             and group not in self.by_group):
            return []  # a group of one is always viable
        return self._evaluate(model, group, event.ts_ns)

    on_device_bound = _device
    on_device_unbound = _device
    on_device_removed = _device
    on_vfio_device_added = _device

    def _evaluate(self, model: Model, group: int, ts_ns: int) -> list[ev.Finding]:
        if len(model.groups.get(group, ())) < 2 and group not in self.by_group:
            return []  # a group of one is always viable
        members = model.group_members(group)
        on_vfio = [r for r in members if r.present and r.driver == VFIO_DRIVER]
        offenders = [r for r in members if _offends(r)]
        key = f"group{group}"
        if not on_vfio or not offenders:
            if key not in self.open_:
                return []
            self.by_group.pop(group, None)
            why = (f"IOMMU group {group} is viable now: no member left on a host driver"
                   if on_vfio else f"no member of IOMMU group {group} is on vfio-pci any more")
            f = self.resolve(key, ts_ns, why)
            return [f] if f is not None else []
        bdf = on_vfio[0].device.bdf
        off = ", ".join(f"{r.device.bdf} on {r.driver}" for r in offenders)
        all_members = ", ".join(r.device.bdf for r in members)
        fields: dict[str, object] = {
            "summary": (f"IOMMU group {group}: {device_label(model, bdf)} is on vfio-pci but "
                        f"{off}: QEMU will report `vfio {bdf}: group {group} is not viable`"),
            "labels": (("group", str(group)), ("members", all_members), ("offenders", off)),
        }
        if key in self.open_:
            f = self.update(key, ts_ns, **fields)
            return [f] if f is not None else []
        self.by_group[group] = key
        ep = model.episode(bdf)
        return [self.open(
            model, key, ts_ns=ts_ns, trigger_ns=ts_ns, bdf=bdf, episode=ep,
            severity=ev.Severity.ERROR,
            explanation=(
                f"VFIO gives a whole IOMMU group to one user, so every member of group {group} "
                f"({all_members}) must be on vfio-pci or unbound. Kata passes every device of the "
                f"group to QEMU, which then fails with `vfio {bdf}: group {group} is not viable` "
                "and `Please ensure all devices within the iommu_group are bound to their vfio "
                "bus driver.`"
            ),
            remedy=(
                f"Bind every member of group {group} to vfio-pci (or unbind them), or use a VF in "
                "a group of its own (ACS on the upstream port, another slot)."
            ),
            **fields,  # type: ignore[arg-type]
        )]
