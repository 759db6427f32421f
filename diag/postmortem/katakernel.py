"""Provides KernelFromKata: the kernel's side of a move, from Kata's own lines, where no capture covers it.

Kata announces each write of a VF move (override, unbind, drivers_probe, bind); the kernel's
answer is what the write asks for. Where a udevadm capture or the agent's journal covers that
time they are the witness and nothing is inferred; elsewhere each write gives the unbind or
bind it makes (source `kata-log`, just after the write), and a QEMU line about a VF Kata
cold-plugged (`Bus '<unknown PCIePortBusPrefix: >0' not found`, `port is not set`) gives the
bind to vfio-pci that must have come before it. These facts exist only in the postmortem: live,
the kernel's own uevents are always there.
"""

from __future__ import annotations

from collections.abc import Iterator

from diag import events as ev
from diag.postmortem.dedupe import Item
from diag.postmortem.inputs import Input

COVER_NS = 2_000_000_000
"""A kernel capture is taken to cover this much before its first and after its last event."""
TEXT_LOGS = frozenset({"journalctl", "journald", "journal-export", "logfmt", "text",
                       "kubectl-describe", "klog", "kata-collect-data"})
"""Input formats that can carry Kata's lines (only they switch the inference on)."""
_KERNEL = (ev.DeviceBound, ev.DeviceUnbound, ev.DeviceAdded, ev.DeviceRemoved)
_IMPLY_VFIO = ("qemu-bus-not-found", "port-not-set")
"""QEMU's failures that prove the VF was on vfio-pci when QEMU was given it."""
_WRITE_DELAY_NS = 1000
"""The kernel's answer is placed this long after the write that asked for it."""


class KernelFromKata:
    """The unbinds and binds Kata's writes made, inferred where no kernel capture speaks."""

    def __init__(self, inputs: list[Input]) -> None:
        self.ranges: list[tuple[int, int]] = []
        """Stretches of time a kernel capture covers (the agent's journal: all of it)."""
        for i in inputs:
            if i.format == "journal":
                self.ranges.append((-(1 << 62), 1 << 62))
            elif i.events and any(isinstance(e, _KERNEL) for e in i.events):
                self.ranges.append((i.events[0].ts_ns - COVER_NS, i.events[-1].ts_ns + COVER_NS))
        self.active = any(i.format in TEXT_LOGS for i in inputs)
        self.override: dict[str, str] = {}
        self.driver: dict[str, str | None] = {}
        """BDF -> its driver as the stream has said so far (None: unbound)."""

    def covered(self, ts: int) -> bool:
        return any(a <= ts <= b for a, b in self.ranges)

    def transform(self, items: Iterator[Item]) -> Iterator[Item]:
        """The stream with each inferred kernel fact after the line it comes from."""
        for item in items:
            yield item
            _, idx, n, e = item
            for d in self.derive(e):
                yield (d.ts_ns, idx, n, d)

    def derive(self, e: ev.Event) -> list[ev.Event]:
        """The kernel facts one event implies (none when a capture covers its time)."""
        if isinstance(e, ev.DeviceBound):
            self.driver[e.bdf] = e.driver
            return []
        if isinstance(e, ev.DeviceUnbound):
            self.driver[e.bdf] = None
            return []
        if isinstance(e, ev.LogLineMatched):
            return self._qemu_had_it(e)
        if not isinstance(e, ev.SysfsWriteObserved) or e.mode != ev.KATA_LOG or e.bdf is None \
                or self.covered(e.ts_ns):
            return []
        if e.control == "driver_override":
            self.override[e.bdf] = e.value.strip()
            return []
        if e.control == "unbind":
            return self._unbind(e, e.bdf)
        return self._bind(e, e.bdf)

    def _qemu_had_it(self, e: ev.LogLineMatched) -> list[ev.Event]:
        """QEMU failing on the VF Kata cold-plugged: it was bound to vfio-pci just before."""
        if (e.signature in _IMPLY_VFIO and e.bdf and not self.covered(e.ts_ns)
                and self.driver.get(e.bdf) != "vfio-pci"
                and (e.signature != "qemu-bus-not-found" or "PCIePortBusPrefix" in e.text)):
            self.driver[e.bdf] = "vfio-pci"
            return [ev.DeviceBound(ts_ns=max(0, e.ts_ns - 1), source=ev.KATA_LOG, bdf=e.bdf,
                                   driver="vfio-pci")]
        return []

    def _unbind(self, e: ev.SysfsWriteObserved, bdf: str) -> list[ev.Event]:
        prev = self.driver.get(bdf)
        if bdf in self.driver and prev is None:
            return []  # already unbound: the kernel has nothing to do
        self.driver[bdf] = None
        return [ev.DeviceUnbound(ts_ns=e.ts_ns + _WRITE_DELAY_NS, source=ev.KATA_LOG, bdf=bdf,
                                 previous_driver=prev or e.driver)]

    def _bind(self, e: ev.SysfsWriteObserved, bdf: str) -> list[ev.Event]:
        drv = None
        if e.control == "drivers_probe":
            drv = self.override.get(bdf)
        elif e.control == "bind":
            drv = e.driver
        if not drv or self.driver.get(bdf) == drv:
            return []
        prev = self.driver.get(bdf)
        self.driver[bdf] = drv
        return [ev.DeviceBound(ts_ns=e.ts_ns + _WRITE_DELAY_NS, source=ev.KATA_LOG, bdf=bdf,
                               driver=drv, previous_driver=prev)]
