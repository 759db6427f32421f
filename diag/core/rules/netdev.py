"""Provides rule `vf-netdev-lost`: a VF's netdev vanished because its device was unbound.

The netdev goes away when the VF leaves its network driver (RTM_DELLINK in the namespace that
had it, `remove net` on the host); it comes back, with a new ifindex and MAC, only when a
network driver binds again. A restore or a driver reload takes milliseconds, so the rule
waits CoreConfig.netdev_grace_ns after the unbind. A VF that went on to vfio-pci is told by the
vfio rules (`vfio-bind-coldplug-disabled`, `vf-stranded-on-vfio`), which name the lost netdev,
so this rule stays quiet for it: one story, told once.
"""

from __future__ import annotations

from diag import events as ev
from diag.core.episodes import VFIO_DRIVER, Episode
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule, Timers, device_label
from diag.core.thresholds import NS, CoreConfig


@register
class VfNetdevLost(ConditionRule):
    """Open when an unbound VF is still without its netdev after the grace period."""

    id = "vf-netdev-lost"
    events = (ev.DeviceUnbound, ev.NetdevRemoved, ev.LinkRemoved, ev.NetdevAdded,
              ev.LinkChanged, ev.DeviceRemoved, ev.DeviceBound)
    ticks = True

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.timers = Timers()
        self.pending: dict[str, Episode] = {}

    # One method per event kind (the correlator calls them directly; `on_event` dispatches).

    def _unbinding(self, model: Model, bdf: str) -> list[ev.Finding]:
        """An unbind or the netdev's removal: wait for the netdev once both are known."""
        ep = model.episodes.get(bdf)
        if (ep is not None and ep.unbind_ns is not None and ep.lost is not None
                and bdf not in self._by_bdf):
            at = max(ep.unbind_ns, ep.lost.ts_ns) + self.config.netdev_grace_ns
            self.pending[bdf] = ep
            self.timers.set(bdf, at)
        return []

    def on_device_unbound(self, model: Model, event: ev.DeviceUnbound) -> list[ev.Finding]:
        return self._unbinding(model, event.bdf) if event.bdf else []

    def on_netdev_removed(self, model: Model, event: ev.NetdevRemoved) -> list[ev.Finding]:
        return self._unbinding(model, event.bdf) if event.bdf else []

    def on_link_removed(self, model: Model, event: ev.LinkRemoved) -> list[ev.Finding]:
        bdf = event.bdf
        if bdf is None:
            ep = model.touched[0] if model.touched else None
            bdf = ep.bdf if ep is not None else None
        return self._unbinding(model, bdf) if bdf else []

    def _back(self, model: Model, event: ev.NetdevAdded | ev.LinkChanged) -> list[ev.Finding]:
        bdf = event.bdf
        if not bdf or (bdf not in self._by_bdf and bdf not in self.timers.due):
            return []
        rec = model.devices.get(bdf)
        if rec is None or rec.netdev is None:
            return []
        why = f"netdev {rec.netdev} is back in netns {rec.netns or 'host'}"
        if isinstance(event, ev.LinkChanged) or event.ifindex is not None:
            why += f" (ifindex {event.ifindex})"
        return self._stop(bdf, event.ts_ns, why)

    on_netdev_added = _back
    on_link_changed = _back

    def on_device_removed(self, model: Model, event: ev.DeviceRemoved) -> list[ev.Finding]:
        bdf = event.bdf
        if not bdf or (bdf not in self._by_bdf and bdf not in self.timers.due):
            return []
        return self._stop(bdf, event.ts_ns, "the VF was removed")

    def on_device_bound(self, model: Model, event: ev.DeviceBound) -> list[ev.Finding]:
        bdf = event.bdf
        if (event.driver != VFIO_DRIVER or not bdf
                or (bdf not in self._by_bdf and bdf not in self.timers.due)):
            return []
        return self._stop(bdf, event.ts_ns, "the VF moved on to vfio-pci (see the vfio rules)")

    def _stop(self, bdf: str, ts_ns: int, why: str) -> list[ev.Finding]:
        self.timers.cancel(bdf)
        self.pending.pop(bdf, None)
        return self.resolve_all(self.keys_for(bdf), ts_ns, why)

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        out = []
        for bdf in self.timers.pop_due(now_ns):
            ep = self.pending.pop(bdf, None)
            rec = model.devices.get(bdf)
            if (ep is None or ep.lost is None or ep.unbind_ns is None or rec is None
                    or not rec.present or rec.driver == VFIO_DRIVER or rec.netdev is not None):
                continue
            lost = ep.lost
            sb = model.sandbox_for(bdf)
            pod = lost.pod or (sb.pod if sb else None)
            pod_ns = lost.pod_namespace or (sb.pod_namespace if sb else None)
            sandbox = lost.sandbox_id or (sb.sandbox_id if sb else None)
            owner = f" of pod {pod_ns or '?'}/{pod}" if pod else ""
            frm = ep.from_driver or rec.last_driver or "its driver"
            now_drv = rec.driver or "no driver"
            grace = self.config.netdev_grace_ns // NS
            out.append(self.open(
                model, bdf, ts_ns=now_ns, trigger_ns=ep.unbind_ns, bdf=bdf, episode=ep,
                severity=ev.Severity.ERROR if pod else ev.Severity.WARNING,
                summary=(f"{device_label(model, bdf)} lost its netdev {lost.ifname} in netns "
                         f"{lost.netns}{owner} when it was unbound from {frm}"),
                actor=ep.actor, netdev=lost.ifname, netns=lost.netns, pod=pod,
                pod_namespace=pod_ns, sandbox_id=sandbox,
                explanation=(
                    f"{lost.ifname} vanished from netns {lost.netns}{owner} when the VF left "
                    f"{frm}; {grace}s later the VF has {now_drv} and no netdev. Whatever used "
                    f"{lost.ifname} has no network on this VF."
                ),
                remedy=(
                    f"Rebind the VF to its network driver: echo {frm} > "
                    f"/sys/bus/pci/devices/{bdf}/driver_override; echo {bdf} > "
                    "/sys/bus/pci/drivers_probe. The netdev returns with a new ifindex and MAC; "
                    "the pod's network must be set up again (restart the pod)."
                ),
                labels=(("ifindex", "" if lost.ifindex is None else str(lost.ifindex)),
                        ("from_driver", frm), ("episode", ep.episode_id)),
            ))
        return out
