"""Provides Model: the core's mutable picture of the host, updated by events, read by rules.

Only the correlator mutates it. Rules read it (and may keep their own state). Every collection
that grows with activity is bounded by CoreConfig.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from diag import events as ev
from diag.core.config import CoreConfig
from diag.core.episodes import VFIO_DRIVER, Episode, LostNetdev
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
    from_inventory: bool = False
    """True when the device was first seen in an inventory scan (its driver then is not a move)."""
    host_driver: str | None = None
    """The device's host (non-vfio) driver as any witness named it, for a move whose own events
    name none: a bind or unbind that named it, a restore writing it to driver_override, a
    listing's `Kernel driver in use`/`Kernel modules`."""
    host_driver_from: str = ""
    """Which witness named `host_driver` (said in the finding)."""
    host_driver_rank: int = 0


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
        self.episodes: dict[str, Episode] = {}
        """BDF -> its current episode (one per known device: bounded by the device count)."""
        self.touched: list[Episode] = []
        """Episodes the last applied event joined (the correlator hands them to rules)."""
        self.groups: dict[int, set[str]] = {}
        """IOMMU group -> BDFs of its members, from every device's `iommu_group`."""
        self._pending_group: tuple[int, int] | None = None
        """(group, ts_ns) of an `add vfio` group node not yet tied to a device."""
        self._unclaimed: deque[ev.SysfsWriteObserved] = deque(maxlen=RECOVERY_BACKLOG)
        """Opens of bind/unbind/drivers_probe whose value (the BDF) the probe could not read
        (tracepoint mode, open-only variant), waiting for the uevent that names the device."""
        self._kernel_moves: deque[list[Any]] = deque(maxlen=RECOVERY_BACKLOG)
        """[ts_ns, bdf, driver, "bound"|"unbound", claimed] of recent binds and unbinds, for
        such opens delivered after the uevent they caused."""

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

    def _join(self, bdf: str, event: ev.Event, starts_move: bool = False) -> Episode | None:
        """Add `event` to the current episode of `bdf`: a new one when outside the window, or
        when the event starts a move (`starts_move`) after the current move completed."""
        rec = self.devices.get(bdf)
        if rec is None:
            return None
        ts = event.ts_ns
        ep = self.episodes.get(bdf)
        window = self.config.episode_window_ns
        if (ep is None or ts > ep.last_ns + window or ts < ep.first_ns - window
                or (starts_move and ep.done_ns is not None and ts > ep.done_ns)):
            ep = Episode(bdf=bdf, first_ns=ts, last_ns=ts, from_driver=rec.driver,
                         to_driver=rec.driver)
            self.episodes[bdf] = ep
        ep.add(event, self.config.history_per_device)
        if not self.touched or self.touched[-1] is not ep:
            self.touched.append(ep)
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
        rec.device = replace(rec.device, iommu_group=group)
        if group is not None:
            self.groups.setdefault(group, set()).add(rec.device.bdf)

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

    @staticmethod
    def _hint(rec: DeviceRecord, driver: str | None, origin: str, rank: int) -> None:
        """Remember a witness naming the device's host driver (the better witness wins)."""
        if driver and driver != VFIO_DRIVER and rank > rec.host_driver_rank:
            rec.host_driver, rec.host_driver_from, rec.host_driver_rank = driver, origin, rank

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
        if cls is not ev.ClockTicked:
            self.recent.append(event)
        src = self.sources.get(event.source)
        if src is None:
            src = self._source(event.source)
        src.events += 1
        if event.synthetic and cls in _NOT_A_MOVE_WHEN_SYNTHETIC:
            # `echo "unbind <uuid>" > .../uevent` reports a move that did not happen: rules see
            # it (findings marked synthetic), the episode keeps it, the device state does not.
            bdf = getattr(event, "bdf", None)
            if bdf:
                self._join(bdf, event)
            return
        handler = _HANDLERS.get(cls)
        if handler is not None:
            handler(self, event)

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
                self._hint(rec, d.driver, f"{e.source} (driver in use)", 2)
                self._hint(rec, d.modules[0] if d.modules else None,
                           f"{e.source} (Kernel modules)", 1)
            else:
                self._hint(rec, d.driver, f"{e.source} (driver in use)", 2)
                self._hint(rec, d.modules[0] if d.modules else None,
                           f"{e.source} (Kernel modules)", 1)
                group = d.iommu_group if d.iommu_group is not None else rec.device.iommu_group
                rec.device = d
                if d.iommu_group != group:
                    rec.device = replace(d, iommu_group=None)
                self._set_group(rec, group)
                if rec.driver != d.driver:
                    self._join(d.bdf, e)
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
        rec.device = replace(
            d, vendor=e.vendor or d.vendor, device=e.device or d.device,
            class_code=e.class_code or d.class_code, pf=e.pf or d.pf,
            vf_index=e.vf_index if e.vf_index is not None else d.vf_index,
            role="vf" if e.pf else d.role,
        )
        self._join(e.bdf, e)

    def _removed(self, e: ev.DeviceRemoved) -> None:
        rec = self.devices.get(e.bdf)
        if rec is not None:
            ep = self._join(e.bdf, e)
            if ep is not None:
                ep.done_ns = e.ts_ns
            rec.present = False
            if rec.driver is not None:
                self._move(rec, e, None)

    def _bound(self, e: ev.DeviceBound) -> None:
        rec = self._ensure(e.bdf, e.ts_ns)
        if not e.synthetic:
            self._recover_from_kernel(e.ts_ns, e.bdf, e.driver, "bound")
        rec.present = True
        if rec.driver is None and rec.last_driver is None and e.previous_driver:
            rec.last_driver = e.previous_driver
        self._hint(rec, e.driver, "a bind to it", 3)
        self._hint(rec, e.previous_driver, "the driver it left", 3)
        ep = self._join(e.bdf, e)
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
        rec = self._ensure(e.bdf, e.ts_ns)
        if not e.synthetic:
            self._recover_from_kernel(e.ts_ns, e.bdf, e.previous_driver or rec.driver, "unbound")
        if rec.driver is None and e.previous_driver and rec.last_driver is None:
            rec.last_driver = e.previous_driver
        self._hint(rec, e.previous_driver or rec.driver, "the driver it was unbound from", 3)
        ep = self._join(e.bdf, e, starts_move=True)
        if ep is not None:
            if ep.from_driver is None and ep.unbind_ns is None:
                ep.from_driver = rec.driver or e.previous_driver
            if ep.unbind_ns is None:
                ep.unbind_ns = e.ts_ns
            ep.to_driver = None
        if rec.driver is not None:
            self._move(rec, e, None)

    def _changed(self, e: ev.DeviceChanged) -> None:
        rec = self._ensure(e.bdf, e.ts_ns)
        if e.attribute == "driver_override":
            rec.driver_override = e.value
        if e.attribute:
            self._join(e.bdf, e)

    def _netdev_added(self, e: ev.NetdevAdded) -> None:
        rec = self.device(e.bdf)
        if rec is not None:
            self._join(rec.device.bdf, e)
            rec.netdev = e.ifname
            rec.netns = rec.netns or "host"
            self._link_note(e.bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=rec.netns, what="added"))

    def _netdev_removed(self, e: ev.NetdevRemoved) -> None:
        rec = self.device(e.bdf)
        if rec is None:
            return
        # The netdev goes because its device is being unbound: it opens that move's episode.
        ep = self._join(rec.device.bdf, e, starts_move=True)
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
        key = (e.netns.inode, e.ifindex)
        old = self.links.get(key)
        self.links[key] = LinkView(
            ifindex=e.ifindex, ifname=e.ifname, netns=e.netns, operstate=e.operstate,
            carrier=e.carrier, admin_up=e.admin_up, mac=e.mac, bdf=e.bdf,
            since_ns=old.since_ns if old and old.operstate == e.operstate else e.ts_ns,
        )
        if e.netns.inode not in self.netns:
            self.netns[e.netns.inode] = e.netns
        rec = self.device(e.bdf)
        if rec is not None:
            moved = rec.netns is not None and rec.netns != e.netns.label
            appeared = rec.netdev is None
            rec.netdev = e.ifname
            rec.netns = e.netns.label
            what = "moved" if moved else ("added" if old is None else e.operstate.lower() or "changed")
            if old is None or moved or old.operstate != e.operstate or old.ifname != e.ifname:
                self._link_note(e.bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=e.netns.label, what=what))
            if appeared and e.bdf is not None:
                self._join(e.bdf, e)

    def _link_removed(self, e: ev.LinkRemoved) -> None:
        old = self.links.pop((e.netns.inode, e.ifindex), None)
        bdf = e.bdf or (old.bdf if old else None)
        rec = self.device(bdf)
        if rec is None or bdf is None:
            return
        ep = self._join(bdf, e, starts_move=True)
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
        if rec.netdev == e.ifname and rec.netns == e.netns.label:
            self._link_note(bdf, LinkNote(ts_ns=e.ts_ns, ifname=e.ifname, netns=e.netns.label, what="removed"))
            rec.netdev = None
            rec.netns = None

    def _netns_added(self, e: ev.NetnsAdded) -> None:
        self.netns[e.netns.inode] = e.netns

    def _netns_removed(self, e: ev.NetnsRemoved) -> None:
        self.netns.pop(e.netns.inode, None)
        for key in [k for k in self.links if k[0] == e.netns.inode]:
            del self.links[key]

    # ---- the BDF of an open-only write, recovered from the uevent that follows ----------------

    @staticmethod
    def _recoverable(e: ev.SysfsWriteObserved) -> bool:
        return (e.bdf is None and e.stage == "open" and e.result >= 0
                and e.control in _RECOVERABLE_CONTROLS)

    @staticmethod
    def _caused(w: ev.SysfsWriteObserved, ts_ns: int, bdf: str, driver: str | None,
                what: str) -> bool:
        """True when the kernel's `what` (bound/unbound) of device `bdf` to/from `driver` at
        `ts_ns` can be what the write opened as `w` made the kernel do."""
        if not 0 <= ts_ns - w.ts_ns <= RECOVERY_WINDOW_NS:
            return False
        via = _link_form_device(w.path)  # `/sys/bus/pci/devices/<bdf>/driver/unbind`
        if via is not None and via != bdf:
            return False
        if w.control == "unbind":
            return what == "unbound" and (w.driver is None or driver is None or w.driver == driver)
        if w.control in ("bind", "new_id"):  # new_id: the kernel binds inside that write
            return what == "bound" and (w.driver is None or w.driver == driver)
        return what == "bound"  # drivers_probe: whichever driver the device matched

    def _recovered(self, w: ev.SysfsWriteObserved, bdf: str) -> ev.SysfsWriteObserved:
        if w.control == "new_id":  # its value is "vendor device": only the device is learnt
            return replace(w, bdf=bdf)
        return replace(w, bdf=bdf, value=bdf, value_recovered=True)

    def _recover_from_kernel(self, ts_ns: int, bdf: str, driver: str | None, what: str) -> None:
        """A bind/unbind uevent: give its BDF to the oldest waiting open it can be the effect of
        (that write then joins the device's episode before the uevent does)."""
        for w in self._unclaimed:
            if self._caused(w, ts_ns, bdf, driver, what):
                self._unclaimed.remove(w)
                self._write(self._recovered(w, bdf))
                return
        self._kernel_moves.append([ts_ns, bdf, driver, what, False])  # bounded: maxlen

    def _recover_from_past(self, e: ev.SysfsWriteObserved) -> ev.SysfsWriteObserved | None:
        """An open delivered after the uevent it caused (eBPF records can be late): the
        earliest unclaimed bind/unbind after it that it can explain."""
        for m in self._kernel_moves:
            if not m[4] and self._caused(e, m[0], m[1], m[2], m[3]):
                m[4] = True
                return self._recovered(e, m[1])
        return None

    def _write(self, e: ev.SysfsWriteObserved) -> None:
        if self._recoverable(e):
            found = self._recover_from_past(e)
            if found is None:
                self._unclaimed.append(e)
                return
            e = found
        bdf = e.bdf
        if bdf:
            self.last_actor[bdf] = e.actor
            rec = self._ensure(bdf, e.ts_ns)  # a write naming a device makes it known
            if e.control == "driver_override" and e.result >= 0 and rec is not None:
                rec.driver_override = e.value.strip() or None
            if rec is not None and e.result >= 0:
                who = "Kata's log" if e.mode == "kata-log" else "a write"
                if e.control == "driver_override":
                    self._hint(rec, e.value.strip(), f"{who} (driver_override <- {e.value.strip()})", 2)
                elif e.control in ("unbind", "bind") and e.driver:
                    self._hint(rec, e.driver, f"{who} ({e.control} of {e.driver})", 2)
            targets = [bdf]
        elif e.control in ("new_id", "remove_id"):
            targets = self._new_id_targets(e)
        else:
            targets = []
        starts = e.result >= 0 and e.control in _MOVE_CONTROLS
        for b in targets:
            ep = self._join(b, e, starts_move=starts and not self._completes(b, e))
            if ep is None:
                continue
            actor = e.actor
            ep.add_actor(actor)
            if e.control not in ep.controls:
                ep.facts += 1
                ep.controls.append(e.control)
            if actor.sandbox_id and ep.sandbox_id is None:
                ep.sandbox_id = actor.sandbox_id
                ep.facts += 1
            va = ep.vfio_actor
            if (e.result >= 0 and (va is None or va.pid != actor.pid or va.comm != actor.comm)
                    and self._steers_to_vfio(b, e)):
                ep.vfio_actor = actor
                ep.facts += 1

    def _completes(self, bdf: str, e: ev.SysfsWriteObserved) -> bool:
        """True when `e` is the write inside which the kernel made the bind that completed the
        current episode: bind/new_id/drivers_probe are stamped when the syscall returns, after
        the bind they caused, so they must join that episode, not start the next one."""
        ep = self.episodes.get(bdf)
        if (ep is None or ep.done_ns is None or e.control not in _BINDING_CONTROLS
                or not 0 <= e.ts_ns - ep.done_ns <= COMPLETION_SLACK_NS):
            return False
        if e.control == "drivers_probe":
            rec = self.devices.get(bdf)
            return rec is not None and rec.driver_override in (None, ep.to_driver)
        return e.driver is not None and e.driver == ep.to_driver

    def _steers_to_vfio(self, bdf: str, e: ev.SysfsWriteObserved) -> bool:
        c = e.control
        if c == "driver_override":
            return e.value.strip() == VFIO_DRIVER
        if c in ("bind", "new_id"):
            return e.driver == VFIO_DRIVER or "/drivers/vfio-pci/" in e.path
        if c == "drivers_probe":
            rec = self.devices.get(bdf)
            return rec is not None and rec.driver_override == VFIO_DRIVER
        return False

    def _new_id_targets(self, e: ev.SysfsWriteObserved) -> list[str]:
        """Devices a `new_id` write ("8086 10ca") is about: matching ids, unbound, moving now."""
        parts = e.value.lower().replace("0x", "").split()
        if len(parts) < 2:
            return []
        vendor, device = parts[0], parts[1]
        window = self.config.episode_window_ns
        out = []
        for bdf, ep in self.episodes.items():
            rec = self.devices.get(bdf)
            # The kernel binds inside the new_id write, but uevents are stamped when read: the
            # write can reach us before the unbind it follows. A device whose episode already
            # holds an unbind write is moving now, whatever its driver looks like yet.
            moving = rec is not None and (rec.driver is None or "unbind" in ep.controls)
            if (rec is not None and rec.device.vendor == vendor and rec.device.device == device
                    and abs(e.ts_ns - ep.last_ns) <= window
                    and (moving or e.control == "remove_id")):
                out.append(bdf)
        return sorted(out)

    def _vfio_added(self, e: ev.VfioDeviceAdded) -> None:
        if e.bdf is not None:
            rec = self.device(e.bdf)
            if rec is not None:
                if e.group is not None:
                    self._set_group(rec, e.group)
                self._join(e.bdf, e)
            return
        if e.group is None:
            return
        members = self.group_members(e.group)
        if members:
            for rec in members:
                self._join(rec.device.bdf, e)
        else:
            self._pending_group = (e.group, e.ts_ns)

    def _vfio_removed(self, e: ev.VfioDeviceRemoved) -> None:
        if e.bdf is not None:
            self._join(e.bdf, e)
        elif e.group is not None:
            for rec in self.group_members(e.group):
                self._join(rec.device.bdf, e)

    def _log(self, e: ev.LogLineMatched) -> None:
        if e.bdf:  # a line naming a PCI device makes it known (its episode holds the line)
            self._ensure(e.bdf, e.ts_ns)
        for bdf in self.log_targets(e):
            ep = self._join(bdf, e)
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

    def _sandbox(self, e: ev.SandboxStarted) -> None:
        self.sandboxes[e.sandbox_id] = e

    def _sandbox_stopped(self, e: ev.SandboxStopped) -> None:
        self.sandboxes.pop(e.sandbox_id, None)

    def _held(self, e: ev.VfioGroupHeld) -> None:
        self.vfio_holders.setdefault(e.group, {})[e.holder.pid] = e.holder
        for rec in self.group_members(e.group):
            self._join(rec.device.bdf, e)

    def _released(self, e: ev.VfioGroupReleased) -> None:
        holders = self.vfio_holders.get(e.group)
        for rec in self.group_members(e.group):
            self._join(rec.device.bdf, e)
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


_NOT_A_MOVE_WHEN_SYNTHETIC = frozenset({
    ev.DeviceBound, ev.DeviceUnbound, ev.DeviceRemoved, ev.NetdevAdded, ev.NetdevRemoved,
})
"""Kernel events whose synthetic copies (SYNTH_UUID) must not change the device state."""

_MOVE_CONTROLS = frozenset({"driver_override", "unbind", "bind", "new_id", "drivers_probe"})
"""Control writes that begin a driver move of a device."""
_BINDING_CONTROLS = frozenset({"bind", "new_id", "drivers_probe"})
"""Writes inside which the kernel binds a driver (so the bind uevent precedes their return)."""
COMPLETION_SLACK_NS = 100_000_000
"""How long after a bind its causing write may return (a probe can take tens of ms)."""
_RECOVERABLE_CONTROLS = frozenset({"unbind", "bind", "drivers_probe", "new_id"})
"""Controls whose device the kernel's following bind/unbind uevent names (for all but new_id,
that BDF is the value written)."""
RECOVERY_WINDOW_NS = 500_000_000
"""How long after an open its write's uevent may be stamped (open, write, the driver's
remove/probe, the uevent read: tens of ms on a host, hundreds under emulation)."""
RECOVERY_BACKLOG = 64
"""Opens waiting for their uevent, and uevents waiting for a late open, kept at most."""


def _link_form_device(path: str) -> str | None:
    """The device named by `/sys/bus/pci/devices/<bdf>/driver/<control>`, else None."""
    if path.startswith("/sys/bus/pci/devices/") and path.count("/") == 7:
        parts = path.split("/")
        if parts[6] == "driver":
            return parts[5]
    return None


_HANDLERS: dict[type[ev.Event], Callable[[Model, Any], None]] = {
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
    ev.VfioDeviceAdded: Model._vfio_added,
    ev.VfioDeviceRemoved: Model._vfio_removed,
    ev.LogLineMatched: Model._log,
    ev.KataConfigLoaded: Model._config,
    ev.SandboxStarted: Model._sandbox,
    ev.SandboxStopped: Model._sandbox_stopped,
    ev.VfioGroupHeld: Model._held,
    ev.VfioGroupReleased: Model._released,
    ev.SourceStateChanged: Model._source_state,
    ev.EventsLost: Model._lost,
    ev.Resynced: Model._resynced,
}
