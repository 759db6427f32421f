"""Provides rule `vf-stranded-on-vfio`: a VF left on vfio-pci that nothing uses (Kata PR #13790).

Kata binds a VF to vfio-pci before it records the endpoint, so several creation failures leave
the VF on vfio-pci with no sandbox, no QEMU and no netdev; later pods get the same VF and find
no network. The condition: a VF on vfio-pci, no live sandbox using it, no process holding its
/dev/vfio/<group>, for CoreConfig.stranded_grace_ns. It resolves when a holder appears, a
sandbox claims it, or the VF goes back to a host driver (or is removed).
"""

from __future__ import annotations

from diag import events as ev
from diag.core.episodes import VFIO_DRIVER
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule, Timers, device_label, is_vf
from diag.core.thresholds import NS, CoreConfig
from diag.render import actor_label


def _moved_by_kata(model: Model, bdf: str) -> bool:
    """Kata moved the device as a physical endpoint (its shim wrote, or its lines name it): a
    NIC function Kata gives a pod, a VF whatever the inputs call it."""
    ep = model.episode(bdf)
    if ep is None:
        return False
    if ep.sandbox_id is not None or any(a.kata_runtime for a in ep.actors):
        return True
    return any(getattr(x, "source", "") == ev.KATA_LOG for x in ep.events)


@register
class VfStrandedOnVfio(ConditionRule):
    """Open when a VF sits on vfio-pci unused past the grace period."""

    id = "vf-stranded-on-vfio"
    events = (ev.DeviceBound, ev.DeviceUnbound, ev.DeviceRemoved, ev.InventoryObserved,
              ev.VfioGroupHeld, ev.VfioGroupReleased, ev.SandboxStarted, ev.SandboxStopped)
    ticks = True

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.timers = Timers()
        self.since: dict[str, int] = {}
        """BDF -> since when it has been on vfio-pci unused (the grace clock)."""
        self.sandbox_vfs: dict[str, tuple[str, ...]] = {}

    def _watch(self, model: Model, bdf: str, since_ns: int) -> None:
        rec = model.devices.get(bdf)
        if rec is None or rec.driver != VFIO_DRIVER or not (is_vf(model, bdf)
                                                            or _moved_by_kata(model, bdf)):
            return
        if bdf in self._by_bdf or bdf in self.timers.due:
            return
        self.since[bdf] = since_ns
        self.timers.set(bdf, since_ns + self.config.stranded_grace_ns)

    def _unwatch(self, bdf: str) -> None:
        if bdf in self.since:
            self.timers.cancel(bdf)
            del self.since[bdf]

    def on_event(self, model: Model, event: ev.Event) -> list[ev.Finding]:
        if isinstance(event, ev.DeviceBound):
            if event.driver == VFIO_DRIVER:
                self._watch(model, event.bdf, event.ts_ns)
                return []
            self._unwatch(event.bdf)
            if event.bdf not in self._by_bdf:
                return []
            return self.resolve_all(self.keys_for(event.bdf), event.ts_ns,
                                    f"the VF returned to host driver {event.driver}")
        if isinstance(event, ev.DeviceUnbound | ev.DeviceRemoved):
            self._unwatch(event.bdf)
            if event.bdf not in self._by_bdf:
                return []
            return self.resolve_all(self.keys_for(event.bdf), event.ts_ns,
                                    "the VF was unbound from vfio-pci"
                                    if isinstance(event, ev.DeviceUnbound) else "the VF was removed")
        if isinstance(event, ev.InventoryObserved):
            for d in event.devices:
                if d.driver == VFIO_DRIVER:
                    rec = model.device(d.bdf)
                    since = rec.since_ns if rec is not None and rec.since_ns is not None \
                        and rec.since_ns <= event.ts_ns else event.ts_ns
                    self._watch(model, d.bdf, since)
            return []
        if isinstance(event, ev.VfioGroupHeld):
            out = []
            for rec in model.group_members(event.group):
                self._unwatch(rec.device.bdf)
                out.extend(self.resolve_all(
                    self.keys_for(rec.device.bdf), event.ts_ns,
                    f"/dev/vfio/{event.group} is now held by {actor_label(event.holder)}"))
            return out
        if isinstance(event, ev.VfioGroupReleased):
            if event.group not in model.vfio_holders:
                for rec in model.group_members(event.group):
                    if model.sandbox_for(rec.device.bdf) is None:
                        self._watch(model, rec.device.bdf, event.ts_ns)
            return []
        if isinstance(event, ev.SandboxStarted):
            bdfs = tuple(sorted({v.bdf for v in event.vfs} | set(event.vmm_vfio_devices)))
            self.sandbox_vfs[event.sandbox_id] = bdfs
            out = []
            for bdf in bdfs:
                self._unwatch(bdf)
                out.extend(self.resolve_all(self.keys_for(bdf), event.ts_ns,
                                            f"sandbox {event.sandbox_id[:12]} uses it"))
            return out
        if isinstance(event, ev.SandboxStopped):
            for bdf in self.sandbox_vfs.pop(event.sandbox_id, ()):
                self._watch(model, bdf, event.ts_ns)
        return []

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        out = []
        for bdf in self.timers.pop_due(now_ns):
            since = self.since.pop(bdf, now_ns)
            rec = model.devices.get(bdf)
            if rec is None or not rec.present or rec.driver != VFIO_DRIVER:
                continue
            if model.sandbox_for(bdf) is not None:
                continue
            group = rec.device.iommu_group
            if group is not None and model.vfio_holders.get(group):
                continue
            out.append(self._open(model, bdf, since, now_ns))
        return out

    def _open(self, model: Model, bdf: str, since: int, now_ns: int) -> ev.Finding:
        rec = model.devices.get(bdf)
        assert rec is not None
        group = rec.device.iommu_group
        node = f"/dev/vfio/{group}" if group is not None else "its /dev/vfio group"
        ep = model.episode(bdf)
        host = rec.last_driver if rec.last_driver and rec.last_driver != VFIO_DRIVER else None
        host = host or (rec.driver_at_start if rec.driver_at_start != VFIO_DRIVER else None)
        grace = self.config.stranded_grace_ns // NS
        evidence: tuple[ev.Evidence, ...] = ()
        if ep is not None:
            evidence = ep.evidence()
        else:
            evidence = (ev.Evidence(ts_ns=since, source="core", kind="inventory_observed",
                                    text=f"{bdf} was on vfio-pci when the agent started"),)
        give_back = host or "<host driver>"
        return self.open(
            model, bdf, ts_ns=now_ns, trigger_ns=since, bdf=bdf, episode=ep,
            severity=ev.Severity.ERROR,
            summary=(f"{device_label(model, bdf)} has sat on vfio-pci for over {grace}s with no "
                     f"sandbox and no process holding {node}"),
            evidence=evidence, actor=ep.actor if ep else None,
            explanation=(
                f"The VF is bound to vfio-pci (driver_override={rec.driver_override or 'none'}) "
                f"but no Kata sandbox lists it and no process (QEMU) holds {node}. This is what "
                "a failed pod creation leaves behind (Kata PR #13790: the VF is bound to "
                "vfio-pci before the endpoint is recorded, so teardown never restores it). "
                "The device plugin may hand it to the next pod, which finds no netdev."
            ),
            remedy=(
                f"If no VM should own it, give it back: echo {give_back} > "
                f"/sys/bus/pci/devices/{bdf}/driver_override; echo {bdf} > "
                f"/sys/bus/pci/drivers/vfio-pci/unbind; echo {bdf} > /sys/bus/pci/drivers_probe. "
                "Kata PR #13790 makes a failed attach restore the host driver."
            ),
            labels=(("group", "" if group is None else str(group)),
                    ("since_ns", str(since)), ("host_driver", host or "")),
        )
