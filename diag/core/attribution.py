"""Provides WriteAttribution: each sysfs control write joined to the moves it caused.

A write (eBPF's record, later also Kata's own log line of it) is evidence of who moved a device:
it joins the episode of each device it is about, names the episode's actor (and the one whose
write steered the device to vfio-pci), and may start a new move. In tracepoint mode's open-only
variant a bind/unbind/drivers_probe open carries no value, so its device is recovered from the
kernel's bind or unbind that follows it (or precedes it, when the eBPF record arrives late).
The Model owns one and hands it the writes and the kernel's moves; pure like the Model.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from diag import events as ev
from diag.core.episodes import VFIO_DRIVER
from diag.events import replace

if TYPE_CHECKING:
    from diag.core.model import DeviceRecord, Model

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


class WriteAttribution:
    """The writes of one Model: who moved which device, and open-only writes waiting for the
    uevent that names their device."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._unclaimed: deque[ev.SysfsWriteObserved] = deque(maxlen=RECOVERY_BACKLOG)
        """Opens of bind/unbind/drivers_probe whose value (the BDF) the probe could not read
        (tracepoint mode, open-only variant), waiting for the uevent that names the device."""
        self._kernel_moves: deque[list[Any]] = deque(maxlen=RECOVERY_BACKLOG)
        """[ts_ns, bdf, driver, "bound"|"unbound", claimed] of recent binds and unbinds, for
        such opens delivered after the uevent they caused."""

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

    def kernel_move(self, ts_ns: int, bdf: str, driver: str | None, what: str) -> None:
        """A bind/unbind uevent: give its BDF to the oldest waiting open it can be the effect of
        (that write then joins the device's episode before the uevent does)."""
        for w in self._unclaimed:
            if self._caused(w, ts_ns, bdf, driver, what):
                self._unclaimed.remove(w)
                self.write(self._recovered(w, bdf))
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

    def write(self, e: ev.SysfsWriteObserved) -> None:
        """Join a write to the episode of each device it is about (recovering the device of an
        open-only write from the kernel's bind/unbind)."""
        model = self.model
        bdf = e.bdf
        if bdf is None and self._recoverable(e):
            found = self._recover_from_past(e)
            if found is None:
                self._unclaimed.append(e)
                return
            e = found
            bdf = e.bdf
        ok = e.result >= 0
        starts = ok and e.control in _MOVE_CONTROLS
        if bdf:
            model.last_actor[bdf] = e.actor
            rec = model.ensure(bdf, e.ts_ns)  # a write naming a device makes it known
            if starts and rec.moves and rec.moves[-1].ts_ns >= e.ts_ns:
                model.backfill_actor(bdf, e.actor, e.ts_ns)  # moves it began came first
            if ok:
                self._hint(rec, e)
            targets = [bdf]
        elif e.control in ("new_id", "remove_id"):
            targets = self._new_id_targets(e)
        else:
            targets = []
        for b in targets:
            ep = model.join(b, e, starts_move=starts and not (
                e.control in _BINDING_CONTROLS and self._completes(b, e)))
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

    @staticmethod
    def _hint(rec: DeviceRecord, e: ev.SysfsWriteObserved) -> None:
        """What a successful write says of the device: its override, and the host driver it
        names (a restore writing it to driver_override, an unbind or bind of it)."""
        who = "Kata's log" if e.mode == ev.KATA_LOG else "a write"
        if e.control == "driver_override":
            value = e.value.strip()
            rec.driver_override = value or None
            rec.hint_host_driver(value, f"{who} (driver_override <- {value})", 2)
        elif e.control in ("unbind", "bind") and e.driver:
            rec.hint_host_driver(e.driver, f"{who} ({e.control} of {e.driver})", 2)

    def _completes(self, bdf: str, e: ev.SysfsWriteObserved) -> bool:
        """True when `e` is the write inside which the kernel made the bind that completed the
        current episode: bind/new_id/drivers_probe are stamped when the syscall returns, after
        the bind they caused, so they must join that episode, not start the next one."""
        ep = self.model.episodes.get(bdf)
        if (ep is None or ep.done_ns is None or e.control not in _BINDING_CONTROLS
                or not 0 <= e.ts_ns - ep.done_ns <= COMPLETION_SLACK_NS):
            return False
        if e.control == "drivers_probe":
            rec = self.model.devices.get(bdf)
            return rec is not None and rec.driver_override in (None, ep.to_driver)
        return e.driver is not None and e.driver == ep.to_driver

    def _steers_to_vfio(self, bdf: str, e: ev.SysfsWriteObserved) -> bool:
        c = e.control
        if c == "driver_override":
            return e.value.strip() == VFIO_DRIVER
        if c in ("bind", "new_id"):
            return e.driver == VFIO_DRIVER or "/drivers/vfio-pci/" in e.path
        if c == "drivers_probe":
            rec = self.model.devices.get(bdf)
            return rec is not None and rec.driver_override == VFIO_DRIVER
        return False

    def _new_id_targets(self, e: ev.SysfsWriteObserved) -> list[str]:
        """Devices a `new_id` write ("8086 10ca") is about: matching ids, unbound, moving now."""
        parts = e.value.lower().replace("0x", "").split()
        if len(parts) < 2:
            return []
        vendor, device = parts[0], parts[1]
        window = self.model.config.episode_window_ns
        out = []
        for bdf, ep in self.model.episodes.items():
            rec = self.model.devices.get(bdf)
            # The kernel binds inside the new_id write, but uevents are stamped when read: the
            # write can reach us before the unbind it follows. A device whose episode already
            # holds an unbind write is moving now, whatever its driver looks like yet.
            moving = rec is not None and (rec.driver is None or "unbind" in ep.controls)
            if (rec is not None and rec.device.vendor == vendor and rec.device.device == device
                    and abs(e.ts_ns - ep.last_ns) <= window
                    and (moving or e.control == "remove_id")):
                out.append(bdf)
        return sorted(out)
