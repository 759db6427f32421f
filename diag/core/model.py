"""Provides Model: the core's mutable picture of the host, updated by events, read by rules.

Only the correlator mutates it. Rules read it (and may keep their own state). Every collection
that grows with activity is bounded by CoreConfig.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from diag import events as ev
from diag.core.config import CoreConfig
from diag.core.state import DeviceView, DriverMove, HostState, LinkNote, LinkView, SourceHealth


@dataclass(slots=True)
class DeviceRecord:
    """Mutable per-device state."""

    device: ev.PciDevice
    driver: str | None
    driver_override: str | None
    driver_at_start: str | None
    since_ns: int | None = None
    last_driver: str | None = None
    """The driver before the current unbound state, for unbind events that carry none."""
    netdev: str | None = None
    netns: str | None = None
    moves: deque[DriverMove] = field(default_factory=deque)
    links: deque[LinkNote] = field(default_factory=deque)
    present: bool = True


@dataclass(slots=True)
class SourceRecord:
    name: str
    up: bool = False
    mode: str = ""
    reason: str = ""
    hint: str = ""
    events: int = 0
    lost: int = 0
    resyncs: int = 0


class Model:
    """The host as the core sees it."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.now_ns = 0
        self.devices: dict[str, DeviceRecord] = {}
        self.links: dict[tuple[int, int], LinkView] = {}
        self.netns: dict[int, ev.NetnsRef] = {}
        self.sandboxes: dict[str, ev.SandboxStarted] = {}
        self.kata_configs: dict[str, ev.KataConfig] = {}
        self.sources: dict[str, SourceRecord] = {}
        self.recent: deque[ev.Event] = deque(maxlen=config.recent_events)
        self.events_total = 0
        self.lost_total = 0
        self.vfio_holders: dict[int, dict[int, ev.Process]] = {}
        """IOMMU group -> pid -> holder."""
        self.last_actor: dict[str, ev.Process] = {}
        """BDF -> the last process seen writing a control file about it."""

    # ---- helpers for rules -------------------------------------------------------------------

    def device(self, bdf: str | None) -> DeviceRecord | None:
        return self.devices.get(bdf) if bdf else None

    def _source(self, name: str) -> SourceRecord:
        rec = self.sources.get(name)
        if rec is None:
            rec = self.sources[name] = SourceRecord(name)
        return rec

    def _ensure(self, bdf: str, ts_ns: int) -> DeviceRecord:
        rec = self.devices.get(bdf)
        if rec is None:
            rec = DeviceRecord(
                device=ev.PciDevice(bdf=bdf), driver=None, driver_override=None,
                driver_at_start=None, since_ns=ts_ns,
            )
            self.devices[bdf] = rec
        return rec

    def _move(self, rec: DeviceRecord, event: ev.Event, to: str | None) -> None:
        frm = rec.driver
        actor = self.last_actor.get(rec.device.bdf)
        rec.moves.append(
            DriverMove(
                ts_ns=event.ts_ns, from_driver=frm, to_driver=to, actor=actor,
                synthetic=event.synthetic, resync=event.resync,
            )
        )
        while len(rec.moves) > self.config.history_per_device:
            rec.moves.popleft()
        if frm is not None:
            rec.last_driver = frm
        rec.driver = to
        rec.since_ns = event.ts_ns

    def _link_note(self, bdf: str | None, note: LinkNote) -> None:
        rec = self.device(bdf)
        if rec is None:
            return
        rec.links.append(note)
        while len(rec.links) > self.config.history_per_device:
            rec.links.popleft()

    # ---- event application -------------------------------------------------------------------

    def apply(self, event: ev.Event) -> None:
        """Fold one event into the model."""
        if event.ts_ns > self.now_ns:
            self.now_ns = event.ts_ns
        self.events_total += 1
        if not isinstance(event, ev.ClockTicked):
            self.recent.append(event)
        src = self._source(event.source)
        src.events += 1
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _inventory(self, e: ev.InventoryObserved) -> None:
        seen = set()
        for d in e.devices:
            seen.add(d.bdf)
            rec = self.devices.get(d.bdf)
            if rec is None:
                self.devices[d.bdf] = DeviceRecord(
                    device=d, driver=d.driver, driver_override=d.driver_override,
                    driver_at_start=d.driver, since_ns=None,
                    netdev=d.netdevs[0] if d.netdevs else None,
                    netns="host" if d.netdevs else None,
                )
            else:
                rec.device = d
                if rec.driver != d.driver:
                    self._move(rec, e, d.driver)
                rec.driver_override = d.driver_override
                rec.present = True
        for bdf, rec in self.devices.items():
            if bdf not in seen:
                rec.present = False

    def _added(self, e: ev.DeviceAdded) -> None:
        rec = self._ensure(e.bdf, e.ts_ns)
        rec.present = True
        d = rec.device
        rec.device = ev.PciDevice(
            **{**_fields(d), "vendor": e.vendor or d.vendor, "device": e.device or d.device,
               "class_code": e.class_code or d.class_code, "pf": e.pf or d.pf,
               "vf_index": e.vf_index if e.vf_index is not None else d.vf_index,
               "role": "vf" if e.pf else d.role}
        )

    def _removed(self, e: ev.DeviceRemoved) -> None:
        rec = self.devices.get(e.bdf)
        if rec is not None:
            rec.present = False
            if rec.driver is not None:
                self._move(rec, e, None)

    def _bound(self, e: ev.DeviceBound) -> None:
        rec = self._ensure(e.bdf, e.ts_ns)
        if rec.driver != e.driver:
            self._move(rec, e, e.driver)

    def _unbound(self, e: ev.DeviceUnbound) -> None:
        rec = self._ensure(e.bdf, e.ts_ns)
        if rec.driver is not None:
            self._move(rec, e, None)
        if rec.netdev and rec.netns:
            pass  # the netdev vanishes with its own event

    def _changed(self, e: ev.DeviceChanged) -> None:
        rec = self._ensure(e.bdf, e.ts_ns)
        if e.attribute == "driver_override":
            rec.driver_override = e.value

    def _netdev_added(self, e: ev.NetdevAdded) -> None:
        rec = self.device(e.bdf)
        if rec is not None:
            rec.netdev = e.ifname
            rec.netns = rec.netns or "host"
            self._link_note(e.bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=rec.netns, what="added"))

    def _netdev_removed(self, e: ev.NetdevRemoved) -> None:
        rec = self.device(e.bdf)
        if rec is not None and rec.netdev == e.ifname:
            self._link_note(e.bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=rec.netns or "host", what="removed"))
            rec.netdev = None

    def _link_changed(self, e: ev.LinkChanged) -> None:
        key = (e.netns.inode, e.ifindex)
        old = self.links.get(key)
        self.links[key] = LinkView(
            ifindex=e.ifindex, ifname=e.ifname, netns=e.netns, operstate=e.operstate,
            carrier=e.carrier, admin_up=e.admin_up, mac=e.mac, bdf=e.bdf,
            since_ns=old.since_ns if old and old.operstate == e.operstate else e.ts_ns,
        )
        self.netns.setdefault(e.netns.inode, e.netns)
        rec = self.device(e.bdf)
        if rec is not None:
            moved = rec.netns is not None and rec.netns != e.netns.label
            rec.netdev = e.ifname
            rec.netns = e.netns.label
            what = "moved" if moved else ("added" if old is None else e.operstate.lower() or "changed")
            if old is None or moved or old.operstate != e.operstate or old.ifname != e.ifname:
                self._link_note(e.bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=e.netns.label, what=what))

    def _link_removed(self, e: ev.LinkRemoved) -> None:
        old = self.links.pop((e.netns.inode, e.ifindex), None)
        bdf = e.bdf or (old.bdf if old else None)
        rec = self.device(bdf)
        if rec is not None and rec.netdev == e.ifname and rec.netns == e.netns.label:
            self._link_note(bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=e.netns.label, what="removed"))
            rec.netdev = None
            rec.netns = None

    def _netns_added(self, e: ev.NetnsAdded) -> None:
        self.netns[e.netns.inode] = e.netns

    def _netns_removed(self, e: ev.NetnsRemoved) -> None:
        self.netns.pop(e.netns.inode, None)
        for key in [k for k in self.links if k[0] == e.netns.inode]:
            del self.links[key]

    def _write(self, e: ev.SysfsWriteObserved) -> None:
        if e.bdf:
            self.last_actor[e.bdf] = e.actor
            if e.control == "driver_override" and e.result >= 0:
                rec = self.device(e.bdf)
                if rec is not None:
                    rec.driver_override = e.value or None

    def _config(self, e: ev.KataConfigLoaded) -> None:
        self.kata_configs[e.config.handler] = e.config

    def _sandbox(self, e: ev.SandboxStarted) -> None:
        self.sandboxes[e.sandbox_id] = e

    def _sandbox_stopped(self, e: ev.SandboxStopped) -> None:
        self.sandboxes.pop(e.sandbox_id, None)

    def _held(self, e: ev.VfioGroupHeld) -> None:
        self.vfio_holders.setdefault(e.group, {})[e.holder.pid] = e.holder

    def _released(self, e: ev.VfioGroupReleased) -> None:
        holders = self.vfio_holders.get(e.group)
        if holders is None:
            return
        if e.pid is None:
            holders.clear()
        else:
            holders.pop(e.pid, None)
        if not holders:
            del self.vfio_holders[e.group]

    def _source_state(self, e: ev.SourceStateChanged) -> None:
        s = self._source(e.name)
        s.up, s.mode, s.reason, s.hint = e.up, e.mode, e.reason, e.hint

    def _lost(self, e: ev.EventsLost) -> None:
        s = self._source(e.lost_source)
        n = e.count if e.count is not None else 1
        s.lost += n
        self.lost_total += n

    def _resynced(self, e: ev.Resynced) -> None:
        self._source(e.resynced_source).resyncs += 1

    # ---- snapshot ----------------------------------------------------------------------------

    def sandbox_for(self, bdf: str) -> ev.SandboxStarted | None:
        """The sandbox that uses `bdf` (physical endpoint, VFIO device or VMM argument)."""
        for sb in self.sandboxes.values():
            if any(v.bdf == bdf for v in sb.vfs) or bdf in sb.vmm_vfio_devices:
                return sb
        return None

    def snapshot(self) -> HostState:
        devices = []
        for bdf in sorted(self.devices):
            r = self.devices[bdf]
            if not r.present:
                continue
            sb = self.sandbox_for(bdf)
            devices.append(
                DeviceView(
                    device=r.device, driver=r.driver, driver_override=r.driver_override,
                    driver_at_start=r.driver_at_start, since_ns=r.since_ns, netdev=r.netdev,
                    netns=r.netns, pod=sb.pod if sb else None,
                    sandbox_id=sb.sandbox_id if sb else None,
                    moves=tuple(r.moves), links=tuple(r.links),
                )
            )
        return HostState(
            ts_ns=self.now_ns,
            devices=tuple(devices),
            links=tuple(sorted(self.links.values(), key=lambda v: (not v.netns.is_host, v.netns.label, v.ifindex))),
            netns=tuple(self.netns.values()),
            sandboxes=tuple(self.sandboxes[k] for k in sorted(self.sandboxes)),
            kata_configs=tuple(self.kata_configs[k] for k in sorted(self.kata_configs)),
            sources=tuple(
                SourceHealth(
                    name=s.name, up=s.up, mode=s.mode, reason=s.reason, hint=s.hint,
                    events=s.events, lost=s.lost, resyncs=s.resyncs,
                )
                for s in sorted(self.sources.values(), key=lambda s: s.name)
            ),
            recent=tuple(self.recent),
            events_total=self.events_total,
            lost_total=self.lost_total,
        )


def _fields(d: ev.PciDevice) -> dict[str, object]:
    return {name: getattr(d, name) for name in d.__slots__}  # type: ignore[attr-defined]


_HANDLERS = {
    ev.InventoryObserved: Model._inventory,
    ev.DeviceAdded: Model._added,
    ev.DeviceRemoved: Model._removed,
    ev.DeviceBound: Model._bound,
    ev.DeviceUnbound: Model._unbound,
    ev.DeviceChanged: Model._changed,
    ev.NetdevAdded: Model._netdev_added,
    ev.NetdevRemoved: Model._netdev_removed,
    ev.LinkChanged: Model._link_changed,
    ev.LinkRemoved: Model._link_removed,
    ev.NetnsAdded: Model._netns_added,
    ev.NetnsRemoved: Model._netns_removed,
    ev.SysfsWriteObserved: Model._write,
    ev.KataConfigLoaded: Model._config,
    ev.SandboxStarted: Model._sandbox,
    ev.SandboxStopped: Model._sandbox_stopped,
    ev.VfioGroupHeld: Model._held,
    ev.VfioGroupReleased: Model._released,
    ev.SourceStateChanged: Model._source_state,
    ev.EventsLost: Model._lost,
    ev.Resynced: Model._resynced,
}
