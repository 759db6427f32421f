"""Provides Model: the core's mutable picture of the host, updated by events, read by rules.

Only the correlator mutates it. Rules read it (and may keep their own state). Every collection
that grows with activity is bounded by CoreConfig.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diag import events as ev
from diag.core.attribution import WriteAttribution
from diag.core.episodes import VFIO_DRIVER, Episode, LostNetdev
from diag.core.kata_exposure import Assessment, assess
from diag.core.state import (
    DeviceView,
    DriverMove,
    HostState,
    LinkNote,
    LinkView,
    Owner,
    SourceHealth,
)
from diag.core.thresholds import CoreConfig


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
    from_inventory: bool = False
    """True when the device was first seen in an inventory scan (its driver then is not a move)."""
    host_driver: str | None = None
    """The device's host (non-vfio) driver as any witness named it, for a move whose own events
    name none: a bind or unbind that named it, a restore writing it to driver_override, a
    listing's `Kernel driver in use`/`Kernel modules`."""
    host_driver_from: str = ""
    """Which witness named `host_driver` (said in the finding)."""
    host_driver_rank: int = 0

    def hint_host_driver(self, driver: str | None, origin: str, rank: int) -> None:
        """Remember a witness naming the device's host driver (the better witness wins)."""
        if driver and driver != VFIO_DRIVER and rank > self.host_driver_rank:
            self.host_driver, self.host_driver_from, self.host_driver_rank = driver, origin, rank


_CRI_POD = re.compile(r"PodSandboxMetadata\{Name:([^,}]+),(?:[^}]*?,)?Namespace:([^,}]+)")
"""The pod containerd's CRI lines name (`RunPodSandbox for &PodSandboxMetadata{Name:N,Uid:U,
Namespace:NS,Attempt:0,} failed`): they carry no sandbox id."""

GONE_SANDBOXES_KEPT = 256
"""Stopped sandboxes remembered for the pod names of the devices they moved."""


class Model:
    """The host as the core sees it."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.now_ns = 0
        self.devices: dict[str, DeviceRecord] = {}
        self.links: dict[tuple[int, int], LinkView] = {}
        self.netns: dict[int, ev.NetnsRef] = {}
        self.sandboxes: dict[str, ev.SandboxStarted] = {}
        self.gone_sandboxes: dict[str, ev.SandboxStarted] = {}
        """Sandboxes that stopped, newest last (at most GONE_SANDBOXES_KEPT)."""
        self.kata_configs: dict[str, ev.KataConfig] = {}
        self.kata_facts: dict[str, ev.KataHandlerFacts] = {}
        self.kata_exposure: dict[str, Assessment] = {}
        """Handler -> its exposure to the known Kata VFIO bugs (judged when its facts change)."""
        self.sources: dict[str, SourceHealth] = {}
        """Each source's health as last reported (replaced on change; `events` is filled in by
        the snapshot from `source_events`)."""
        self.source_events: dict[str, int] = {}
        """Events per source (a dict increment on every event)."""
        self.recent: deque[ev.Event] = deque(maxlen=config.recent_events)
        self.events_total = 0
        self.lost_total = 0
        self.vfio_holders: dict[int, dict[int, ev.Process]] = {}
        """IOMMU group -> pid -> holder."""
        self.last_actor: dict[str, ev.Process] = {}
        """BDF -> the last process seen writing a control file about it."""
        self.episodes: dict[str, Episode] = {}
        """BDF -> its current episode (one per known device: bounded by the device count)."""
        self.touched: list[Episode] = []
        """Episodes the last applied event joined (the correlator hands them to rules)."""
        self.groups: dict[int, set[str]] = {}
        """IOMMU group -> BDFs of its members, from every device's `iommu_group`."""
        self._pending_group: tuple[int, int] | None = None
        """(group, ts_ns) of an `add vfio` group node not yet tied to a device."""
        self.writes = WriteAttribution(self)
        """Joins each sysfs write to the episodes of the devices it moves."""
        self._sandbox_of: dict[str, ev.SandboxStarted] | None = None
        """BDF -> the first sandbox that uses it (`sandbox_for`), rebuilt after sandboxes change."""
        self.kata_derived: dict[Any, Any] = {}
        """What rules derive from the Kata configurations and sandboxes alone (the effective
        cold_plug_vfio of a device and actor), cleared whenever either changes."""
        self._window = config.episode_window_ns
        self._history = config.history_per_device
        self._handlers: dict[type[ev.Event], Callable[[Any], None]] = {
            cls: getattr(self, name) for cls, name in _HANDLERS.items()}
        """Event class -> this model's bound handler (one lookup and one call per event)."""
        self._handlers[ev.SysfsWriteObserved] = self.writes.write
        self._log_seen: tuple[ev.LogLineMatched, int, list[str]] | None = None
        """(line, events_total when applied, its `log_targets`): the last log line applied."""

    # ---- helpers for rules -------------------------------------------------------------------

    def device(self, bdf: str | None) -> DeviceRecord | None:
        return self.devices.get(bdf) if bdf else None

    def episode(self, bdf: str | None) -> Episode | None:
        """The current episode of `bdf`, if any."""
        return self.episodes.get(bdf) if bdf else None

    def group_members(self, group: int | None) -> list[DeviceRecord]:
        """Known devices of an IOMMU group, ordered by BDF."""
        if group is None:
            return []
        return [self.devices[b] for b in sorted(self.groups.get(group, ())) if b in self.devices]

    def join(self, bdf: str, event: ev.Event, starts_move: bool = False) -> Episode | None:
        """Add `event` to the current episode of `bdf`: a new one when outside the window, or
        when the event starts a move (`starts_move`) after the current move completed."""
        rec = self.devices.get(bdf)
        if rec is None:
            return None
        ts = event.ts_ns
        ep = self.episodes.get(bdf)
        window = self._window
        if (ep is None or ts > ep.last_ns + window or ts < ep.first_ns - window
                or (starts_move and ep.done_ns is not None and ts > ep.done_ns)):
            ep = Episode(bdf=bdf, first_ns=ts, last_ns=ts, from_driver=rec.driver,
                         to_driver=rec.driver)
            self.episodes[bdf] = ep
        ep.add(event, self._history)
        touched = self.touched
        if not touched or touched[-1] is not ep:
            touched.append(ep)
        return ep

    def _set_group(self, rec: DeviceRecord, group: int | None) -> None:
        old = rec.device.iommu_group
        if old == group:
            if group is not None:
                self.groups.setdefault(group, set()).add(rec.device.bdf)
            return
        if old is not None and old in self.groups:
            self.groups[old].discard(rec.device.bdf)
            if not self.groups[old]:
                del self.groups[old]
        rec.device = ev.replace(rec.device, iommu_group=group)
        if group is not None:
            self.groups.setdefault(group, set()).add(rec.device.bdf)

    def _source(self, name: str) -> SourceHealth:
        rec = self.sources.get(name)
        if rec is None:
            rec = self.sources[name] = SourceHealth(name=name)
            self.source_events.setdefault(name, 0)
        return rec

    def ensure(self, bdf: str, ts_ns: int) -> DeviceRecord:
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
        moves = rec.moves
        moves.append(
            DriverMove(
                ts_ns=event.ts_ns, from_driver=frm, to_driver=to, actor=actor,
                synthetic=event.synthetic, resync=event.resync,
            )
        )
        while len(moves) > self._history:
            moves.popleft()
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
        ts = event.ts_ns
        if ts > self.now_ns:
            self.now_ns = ts
        self.events_total += 1
        if self.touched:
            self.touched = []
        cls = type(event)
        if cls is not _CLOCK_TICKED:
            self.recent.append(event)
        counts = self.source_events
        source = event.source
        n = counts.get(source)
        if n is None:
            self._source(source)
            n = 0
        counts[source] = n + 1
        if event.synthetic and cls in _NOT_A_MOVE_WHEN_SYNTHETIC:
            # `echo "unbind <uuid>" > .../uevent` reports a move that did not happen: rules see
            # it (findings marked synthetic), the episode keeps it, the device state does not.
            bdf = getattr(event, "bdf", None)
            if bdf:
                self.join(bdf, event)
            return
        handler = self._handlers.get(cls)
        if handler is not None:
            handler(event)

    def _inventory(self, e: ev.InventoryObserved) -> None:
        seen = set()
        for d in e.devices:
            seen.add(d.bdf)
            rec = self.devices.get(d.bdf)
            if rec is None:
                rec = self.devices[d.bdf] = DeviceRecord(
                    device=d, driver=d.driver, driver_override=d.driver_override,
                    driver_at_start=d.driver, since_ns=None,
                    netdev=d.netdevs[0] if d.netdevs else None,
                    netns="host" if d.netdevs else None,
                    from_inventory=True,
                )
                if d.iommu_group is not None:
                    self.groups.setdefault(d.iommu_group, set()).add(d.bdf)
            else:
                group = d.iommu_group if d.iommu_group is not None else rec.device.iommu_group
                rec.device = d
                if d.iommu_group != group:
                    rec.device = ev.replace(d, iommu_group=None)
                self._set_group(rec, group)
                if rec.driver != d.driver:
                    self.join(d.bdf, e)
                    self._move(rec, e, d.driver)
                rec.driver_override = d.driver_override
                rec.present = True
            rec.hint_host_driver(d.driver, f"{e.source} (driver in use)", 2)
            rec.hint_host_driver(d.modules[0] if d.modules else None,
                                 f"{e.source} (Kernel modules)", 1)
        for bdf, rec in self.devices.items():
            if bdf not in seen:
                rec.present = False

    def _added(self, e: ev.DeviceAdded) -> None:
        rec = self.ensure(e.bdf, e.ts_ns)
        rec.present = True
        d = rec.device
        rec.device = ev.replace(
            d, vendor=e.vendor or d.vendor, device=e.device or d.device,
            class_code=e.class_code or d.class_code, pf=e.pf or d.pf,
            vf_index=e.vf_index if e.vf_index is not None else d.vf_index,
            role="vf" if e.pf else d.role,
        )
        self.join(e.bdf, e)

    def _removed(self, e: ev.DeviceRemoved) -> None:
        rec = self.devices.get(e.bdf)
        if rec is not None:
            ep = self.join(e.bdf, e)
            if ep is not None:
                ep.done_ns = e.ts_ns
            rec.present = False
            if rec.driver is not None:
                self._move(rec, e, None)

    def _bound(self, e: ev.DeviceBound) -> None:
        rec = self.ensure(e.bdf, e.ts_ns)
        if not e.synthetic:
            self.writes.kernel_move(e.ts_ns, e.bdf, e.driver, "bound")
        rec.present = True
        if rec.driver is None and rec.last_driver is None and e.previous_driver:
            rec.last_driver = e.previous_driver
        rec.hint_host_driver(e.driver, "a bind to it", 3)
        rec.hint_host_driver(e.previous_driver, "the driver it left", 3)
        ep = self.join(e.bdf, e)
        if rec.driver != e.driver:
            self._move(rec, e, e.driver)
        if ep is not None:
            ep.to_driver = e.driver
            if ep.done_ns is None or e.ts_ns > ep.done_ns:
                ep.done_ns = e.ts_ns
            if e.driver == VFIO_DRIVER:
                if ep.vfio_bind_ns is None:
                    ep.vfio_bind_ns = e.ts_ns
                if rec.device.iommu_group is None and self._pending_group is not None:
                    group, ts = self._pending_group
                    if abs(e.ts_ns - ts) <= self.config.episode_window_ns:
                        self._set_group(rec, group)
                        self._pending_group = None
            else:
                ep.host_bind_ns = e.ts_ns

    def _unbound(self, e: ev.DeviceUnbound) -> None:
        rec = self.ensure(e.bdf, e.ts_ns)
        if not e.synthetic:
            self.writes.kernel_move(e.ts_ns, e.bdf, e.previous_driver or rec.driver, "unbound")
        if rec.driver is None and e.previous_driver and rec.last_driver is None:
            rec.last_driver = e.previous_driver
        rec.hint_host_driver(e.previous_driver or rec.driver, "the driver it was unbound from", 3)
        ep = self.join(e.bdf, e, starts_move=True)
        if ep is not None:
            if ep.from_driver is None and ep.unbind_ns is None:
                ep.from_driver = rec.driver or e.previous_driver
            if ep.unbind_ns is None:
                ep.unbind_ns = e.ts_ns
            ep.to_driver = None
        if rec.driver is not None:
            self._move(rec, e, None)

    def _changed(self, e: ev.DeviceChanged) -> None:
        rec = self.ensure(e.bdf, e.ts_ns)
        if e.attribute == "driver_override":
            rec.driver_override = e.value
        if e.attribute:
            self.join(e.bdf, e)

    def _netdev_added(self, e: ev.NetdevAdded) -> None:
        rec = self.device(e.bdf)
        if rec is not None:
            self.join(rec.device.bdf, e)
            rec.netdev = e.ifname
            rec.netns = rec.netns or "host"
            self._link_note(e.bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=rec.netns, what="added"))

    def _netdev_removed(self, e: ev.NetdevRemoved) -> None:
        rec = self.device(e.bdf)
        if rec is None:
            return
        # The netdev goes because its device is being unbound: it opens that move's episode.
        ep = self.join(rec.device.bdf, e, starts_move=True)
        if ep is not None and (ep.lost is None or not ep.lost.from_link):
            netns = rec.netns if rec.netdev == e.ifname and rec.netns else "host"
            sb = self.sandbox_for(rec.device.bdf)
            ep.facts += 1
            ep.lost = LostNetdev(
                ts_ns=e.ts_ns, ifname=e.ifname, ifindex=e.ifindex, netns=netns,
                pod=sb.pod if sb else None, pod_namespace=sb.pod_namespace if sb else None,
                sandbox_id=sb.sandbox_id if sb else None,
            )
        if rec.netdev == e.ifname:
            self._link_note(e.bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=rec.netns or "host", what="removed"))
            rec.netdev = None

    def _link_changed(self, e: ev.LinkChanged) -> None:
        # Most events of a busy host: pod veths (no device) going up and down.
        netns = e.netns
        inode = netns.inode
        key = (inode, e.ifindex)
        links = self.links
        old = links.get(key)
        links[key] = LinkView(
            ifindex=e.ifindex, ifname=e.ifname, netns=netns, operstate=e.operstate,
            carrier=e.carrier, admin_up=e.admin_up, mac=e.mac, bdf=e.bdf,
            since_ns=old.since_ns if old and old.operstate == e.operstate else e.ts_ns,
        )
        if inode not in self.netns:
            self.netns[inode] = netns
        if e.bdf is None:
            return
        rec = self.devices.get(e.bdf)
        if rec is not None:
            label = e.netns.label  # a property that formats: read once
            moved = rec.netns is not None and rec.netns != label
            appeared = rec.netdev is None
            rec.netdev = e.ifname
            rec.netns = label
            if old is None or moved or old.operstate != e.operstate or old.ifname != e.ifname:
                what = ("moved" if moved else
                        "added" if old is None else e.operstate.lower() or "changed")
                self._link_note(e.bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=label, what=what))
            if appeared and e.bdf is not None:
                self.join(e.bdf, e)

    def _link_removed(self, e: ev.LinkRemoved) -> None:
        old = self.links.pop((e.netns.inode, e.ifindex), None)
        bdf = e.bdf or (old.bdf if old else None)
        rec = self.device(bdf)
        if rec is None or bdf is None:
            return
        ep = self.join(bdf, e, starts_move=True)
        if ep is not None:
            netns = self.netns.get(e.netns.inode, e.netns)
            sb = self.sandbox_for(bdf)
            if sb is None and netns.sandbox_id:
                sb = self.sandboxes.get(netns.sandbox_id)
            ep.facts += 1
            ep.lost = LostNetdev(
                ts_ns=e.ts_ns, ifname=e.ifname, ifindex=e.ifindex, netns=netns.label,
                pod=netns.pod or (sb.pod if sb else None),
                pod_namespace=netns.pod_namespace or (sb.pod_namespace if sb else None),
                sandbox_id=netns.sandbox_id or (sb.sandbox_id if sb else None),
                from_link=True,
            )
        if rec.netdev == e.ifname and rec.netns == (label := e.netns.label):
            self._link_note(bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=label, what="removed"))
            rec.netdev = None
            rec.netns = None

    def _netns_added(self, e: ev.NetnsAdded) -> None:
        self.netns[e.netns.inode] = e.netns

    def _netns_removed(self, e: ev.NetnsRemoved) -> None:
        self.netns.pop(e.netns.inode, None)
        for key in [k for k in self.links if k[0] == e.netns.inode]:
            del self.links[key]

    def _vfio_added(self, e: ev.VfioDeviceAdded) -> None:
        if e.bdf is not None:
            rec = self.devices.get(e.bdf)
            if rec is not None:
                if e.group is not None:
                    self._set_group(rec, e.group)
                self.join(e.bdf, e)
            return
        if e.group is None:
            return
        members = self.group_members(e.group)
        if members:
            for rec in members:
                self.join(rec.device.bdf, e)
        else:
            self._pending_group = (e.group, e.ts_ns)

    def _vfio_removed(self, e: ev.VfioDeviceRemoved) -> None:
        if e.bdf is not None:
            self.join(e.bdf, e)
        elif e.group is not None:
            for rec in self.group_members(e.group):
                self.join(rec.device.bdf, e)

    def _log(self, e: ev.LogLineMatched) -> None:
        if e.bdf:  # a line naming a PCI device makes it known (its episode holds the line)
            self.ensure(e.bdf, e.ts_ns)
        targets = self.log_targets(e)
        # The rules that read this line ask for its targets again within this event.
        self._log_seen = (e, self.events_total, targets)
        for bdf in targets:
            ep = self.join(bdf, e)
            if ep is not None:
                if e.signature not in ep.signatures:
                    ep.signatures.append(e.signature)
                    ep.facts += 1
                if e.sandbox_id and ep.sandbox_id is None:
                    ep.sandbox_id = e.sandbox_id
                    ep.facts += 1

    def log_targets(self, e: ev.LogLineMatched) -> list[str]:
        """The devices a log line is about: its BDF, else its sandbox's VFs, else its group."""
        if e.bdf:
            return [e.bdf]
        seen = self._log_seen
        if seen is not None and seen[0] is e and seen[1] == self.events_total:
            # Joining the line to its targets changed none of what chose them (their sandbox,
            # a window they are already inside), so within the same event the answer holds.
            return seen[2]
        if e.sandbox_id and e.sandbox_id in self.sandboxes:
            sb = self.sandboxes[e.sandbox_id]
            return sorted({v.bdf for v in sb.vfs} | set(sb.vmm_vfio_devices))
        if e.sandbox_id:
            # A failed creation leaves no sandbox state: the episode whose actor named it.
            return sorted(b for b, ep in self.episodes.items()
                          if ep.sandbox_id == e.sandbox_id
                          and abs(e.ts_ns - ep.last_ns) <= self.config.episode_window_ns)
        if e.iommu_group is not None:
            return [r.device.bdf for r in self.group_members(e.iommu_group)]
        return []

    def _config(self, e: ev.KataConfigLoaded) -> None:
        self.kata_configs[e.config.handler] = e.config
        self.kata_derived.clear()

    def _facts(self, e: ev.KataFactsObserved) -> None:
        h = e.facts.handler
        if e.gone:
            self.kata_facts.pop(h, None)
            self.kata_exposure.pop(h, None)
        elif self.kata_facts.get(h) != e.facts:
            self.kata_facts[h] = e.facts
            self.kata_exposure[h] = assess(e.facts)

    def _sandbox(self, e: ev.SandboxStarted) -> None:
        self.sandboxes[e.sandbox_id] = e
        self._sandbox_of = None
        self.kata_derived.clear()

    def _sandbox_stopped(self, e: ev.SandboxStopped) -> None:
        sb = self.sandboxes.pop(e.sandbox_id, None)
        if sb is not None:
            # Kept a while, bounded: the devices it moved still name its pod once it is gone.
            self.gone_sandboxes[e.sandbox_id] = sb
            while len(self.gone_sandboxes) > GONE_SANDBOXES_KEPT:
                del self.gone_sandboxes[next(iter(self.gone_sandboxes))]
        self._sandbox_of = None
        self.kata_derived.clear()

    def _held(self, e: ev.VfioGroupHeld) -> None:
        self.vfio_holders.setdefault(e.group, {})[e.holder.pid] = e.holder
        for rec in self.group_members(e.group):
            self.join(rec.device.bdf, e)

    def _released(self, e: ev.VfioGroupReleased) -> None:
        holders = self.vfio_holders.get(e.group)
        for rec in self.group_members(e.group):
            self.join(rec.device.bdf, e)
        if holders is None:
            return
        if e.pid is None:
            holders.clear()
        else:
            holders.pop(e.pid, None)
        if not holders:
            del self.vfio_holders[e.group]

    def _source_state(self, e: ev.SourceStateChanged) -> None:
        self.sources[e.name] = ev.replace(self._source(e.name), up=e.up, mode=e.mode,
                                          reason=e.reason, hint=e.hint)

    def _lost(self, e: ev.EventsLost) -> None:
        s = self._source(e.lost_source)
        if e.count is None:  # the kernel said "some": an incident, not a number of events
            self.sources[e.lost_source] = ev.replace(s, lost_incidents=s.lost_incidents + 1)
            return
        self.sources[e.lost_source] = ev.replace(s, lost=s.lost + e.count)
        self.lost_total += e.count

    def _resynced(self, e: ev.Resynced) -> None:
        s = self._source(e.resynced_source)
        self.sources[e.resynced_source] = ev.replace(s, resyncs=s.resyncs + 1)

    # ---- snapshot ----------------------------------------------------------------------------

    def sandbox_of_line(self, e: ev.LogLineMatched) -> str | None:
        """The sandbox a log line is about: the one it names, else the running sandbox of the
        pod a containerd CRI line names (name and namespace both match, one sandbox only)."""
        if e.sandbox_id:
            return e.sandbox_id
        m = _CRI_POD.search(e.text)
        if m is None:
            return None
        name, ns = m.group(1), m.group(2)
        found = [sid for sid, sb in self.sandboxes.items()
                 if sb.pod == name and sb.pod_namespace == ns]
        return found[0] if len(found) == 1 else None

    def sandbox_for(self, bdf: str) -> ev.SandboxStarted | None:
        """The sandbox that uses `bdf` (physical endpoint, VFIO device or VMM argument); the
        first one known when several name it."""
        index = self._sandbox_of
        if index is None:
            index = {}
            for sb in self.sandboxes.values():
                for v in sb.vfs:
                    index.setdefault(v.bdf, sb)
                for b in sb.vmm_vfio_devices:
                    index.setdefault(b, sb)
            self._sandbox_of = index
        return index.get(bdf)

    def owner(self, bdf: str, episode: Episode | None = None) -> Owner:
        """The sandbox, pod and mover of `bdf`, from the evidence: the sandbox that lists the
        device, else the one whose shim moved it (the writer's sandbox, or one a log line
        named), else the pod whose netdev vanished with it; the mover is the episode's actor
        (the write that steered it to vfio-pci, else the first writer); with no episode, the last
        writer.
        Every view asks this, so the device row, its story and its findings never disagree."""
        ep = episode if episode is not None else self.episodes.get(bdf)
        # A move with no write attributed has no mover: the last writer of an earlier move (a
        # rollback's shim) is not claimed for it; without an episode the last writer is all.
        actor = ep.actor if ep is not None else self.last_actor.get(bdf)
        sb = self.sandbox_for(bdf)
        if sb is None:
            for sid in (actor.sandbox_id if actor else None, ep.sandbox_id if ep else None):
                if sid and sid in self.sandboxes:
                    sb = self.sandboxes[sid]
                    break
        lost = ep.lost if ep is not None else None
        if sb is not None:
            return Owner(sandbox_id=sb.sandbox_id, pod=sb.pod or (lost.pod if lost else None),
                         pod_namespace=sb.pod_namespace or (lost.pod_namespace if lost else None),
                         actor=actor, running=True)
        sandbox_id = ((ep.sandbox_id if ep else None) or (actor.sandbox_id if actor else None)
                      or (lost.sandbox_id if lost else None))
        gone = self.gone_sandboxes.get(sandbox_id) if sandbox_id else None
        pod = ((gone.pod if gone else None) or (actor.pod if actor else None)
               or (lost.pod if lost else None))
        ns = ((gone.pod_namespace if gone and gone.pod else None)
              or (actor.pod_namespace if actor and actor.pod else None)
              or (lost.pod_namespace if lost and lost.pod else None))
        return Owner(sandbox_id=sandbox_id, pod=pod, pod_namespace=ns, actor=actor)

    def backfill_actor(self, bdf: str, actor: ev.Process, ts_ns: int) -> None:
        """A write that arrived after the moves it caused (eBPF records can be late): name its
        writer on the moves it began, up to the bind that completed them, where none is named."""
        rec = self.devices.get(bdf)
        if rec is None or not rec.moves or rec.moves[-1].ts_ns < ts_ns:
            return
        window = self.config.episode_window_ns
        moves = rec.moves
        for i in range(len(moves)):
            m = moves[i]
            if m.ts_ns < ts_ns or m.synthetic:
                continue
            if m.ts_ns - ts_ns > window:
                break
            if m.actor is None:
                moves[i] = ev.replace(m, actor=actor)
            if m.to_driver is not None:
                break  # the bind that completed this move: later moves are another's

    def snapshot(self) -> HostState:
        devices = []
        for bdf in sorted(self.devices):
            r = self.devices[bdf]
            if not r.present:
                continue
            own = self.owner(bdf)
            devices.append(
                DeviceView(
                    device=r.device, driver=r.driver, driver_override=r.driver_override,
                    driver_at_start=r.driver_at_start, since_ns=r.since_ns, netdev=r.netdev,
                    netns=r.netns, pod=own.pod, pod_namespace=own.pod_namespace,
                    sandbox_id=own.sandbox_id, sandbox_running=own.running, actor=own.actor,
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
            kata_facts=tuple(self.kata_facts[k] for k in sorted(self.kata_facts)),
            kata_exposure=tuple(self.kata_exposure[k] for k in sorted(self.kata_exposure)),
            sources=tuple(ev.replace(s, events=self.source_events[s.name])
                          for s in sorted(self.sources.values(), key=lambda s: s.name)),
            recent=tuple(self.recent),
            events_total=self.events_total,
            lost_total=self.lost_total,
        )


_CLOCK_TICKED = ev.ClockTicked
_NOT_A_MOVE_WHEN_SYNTHETIC = frozenset({
    ev.DeviceBound, ev.DeviceUnbound, ev.DeviceRemoved, ev.NetdevAdded, ev.NetdevRemoved,
})
"""Kernel events whose synthetic copies (SYNTH_UUID) must not change the device state."""

_HANDLERS: dict[type[ev.Event], str] = {
    ev.InventoryObserved: "_inventory",
    ev.DeviceAdded: "_added",
    ev.DeviceRemoved: "_removed",
    ev.DeviceBound: "_bound",
    ev.DeviceUnbound: "_unbound",
    ev.DeviceChanged: "_changed",
    ev.NetdevAdded: "_netdev_added",
    ev.NetdevRemoved: "_netdev_removed",
    ev.LinkChanged: "_link_changed",
    ev.LinkRemoved: "_link_removed",
    ev.NetnsAdded: "_netns_added",
    ev.NetnsRemoved: "_netns_removed",
    ev.VfioDeviceAdded: "_vfio_added",
    ev.VfioDeviceRemoved: "_vfio_removed",
    ev.LogLineMatched: "_log",
    ev.KataConfigLoaded: "_config",
    ev.KataFactsObserved: "_facts",
    ev.SandboxStarted: "_sandbox",
    ev.SandboxStopped: "_sandbox_stopped",
    ev.VfioGroupHeld: "_held",
    ev.VfioGroupReleased: "_released",
    ev.SourceStateChanged: "_source_state",
    ev.EventsLost: "_lost",
    ev.Resynced: "_resynced",
}
