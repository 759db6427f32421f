"""Provides Episode: everything the sources said about one device move, merged, in time order.

A move of a VF (igbvf -> vfio-pci, and back) is reported by up to five sources, each in its own
words and on its own socket: the writes (eBPF), the kernel's unbind/bind and vfio nodes
(uevents), the netdev vanishing (uevent `remove net`, RTM_DELLINK in the pod's namespace) and
Kata's log lines. Events about one device within `CoreConfig.episode_window_ns` of each other
join one Episode, so a finding tells the whole story once, with its evidence sorted by time
(never by arrival order, which varies between sockets). An episode is one move: once the
device is bound again, the next successful control write, unbind or netdev removal stamped
after that bind starts a new episode (a restore 1.6 s after a bind is its own story), while what follows the
bind without moving the device (QEMU's error, a late RTM_DELLINK) still joins it.

Episodes keep the events themselves and render Evidence lines (`diag.render.evidence`) only
when a finding needs them: the hot path appends a reference, it formats nothing. Each episode holds at most
`CoreConfig.history_per_device` events; each device keeps only its current episode, so memory
is bounded by the number of devices, not by uptime.
"""

from __future__ import annotations

from bisect import insort

import msgspec

from diag import events as ev
from diag import render

VFIO_DRIVER = "vfio-pci"
MAX_ACTORS = 8
"""Distinct writers kept per episode (a storm of writers does not grow it)."""


class LostNetdev(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The netdev a device lost when it was unbound, and who had it (immutable values only:
    untracked by the cycle collector)."""

    ts_ns: int
    ifname: str
    ifindex: int | None = None
    netns: str = "host"
    """Label of the namespace it vanished from."""
    pod: str | None = None
    pod_namespace: str | None = None
    sandbox_id: str | None = None
    from_link: bool = False
    """True when rtnetlink (which names the namespace) reported it, not only a host uevent."""


class Episode(msgspec.Struct, kw_only=True):
    """One device move as told by every source (mutable; only the Model changes it)."""

    bdf: str
    first_ns: int
    last_ns: int
    events: list[ev.Event] = msgspec.field(default_factory=list)
    """Events that joined, in arrival order (render with `evidence()` for time order)."""
    dropped: int = 0
    """Events that did not fit (bounded by CoreConfig.history_per_device)."""
    from_driver: str | None = None
    """The driver the device had when the episode began (None: it had none)."""
    to_driver: str | None = None
    """The driver it has now (None: unbound)."""
    unbind_ns: int | None = None
    """Time of the first unbind in the episode."""
    vfio_bind_ns: int | None = None
    """Time of the first bind to vfio-pci in the episode."""
    host_bind_ns: int | None = None
    """Time of the last bind to a driver other than vfio-pci in the episode."""
    done_ns: int | None = None
    """When the move completed (a bind, or the device's removal): a later write or unbind
    starts the next episode even within the window; later log lines still join this one."""
    actors: list[ev.Process] = msgspec.field(default_factory=list)
    """Distinct processes that wrote a control file about this device, first writer first."""
    vfio_actor: ev.Process | None = None
    """The process whose write steered the device to vfio-pci (override, new_id, bind, probe)."""
    controls: list[str] = msgspec.field(default_factory=list)
    """Distinct controls written, first written first (`driver_override`, `unbind`, ...)."""
    lost: LostNetdev | None = None
    sandbox_id: str | None = None
    """A sandbox named by the actor or a log line."""
    signatures: list[str] = msgspec.field(default_factory=list)
    """Kata/QEMU/kernel log signatures seen, first seen first."""
    synthetic: bool = False
    """True when a kernel event of the episode was synthetic (SYNTH_UUID)."""
    resync: bool = False
    version: int = 0
    """Bumped on every event that joins; rules compare it to know the evidence grew."""
    facts: int = 0
    """Bumped when what the episode says changes (actor, lost netdev, signature, sandbox);
    rules reassess a finding only then, and otherwise just mark its evidence stale."""
    _lines: list[ev.Evidence] = msgspec.field(default_factory=list)
    """Evidence rendered so far, parallel to `events` (each event is described once)."""
    _sorted: list[ev.Evidence] = msgspec.field(default_factory=list)
    """`_lines` in time order, kept by insertion (events mostly arrive in time order, so a
    new line is appended, not the whole story sorted again); emptied when a line is dropped."""
    _told: tuple[ev.Evidence, ...] | None = None
    """`evidence()` as of `_told_version` (several findings follow one episode: told once)."""
    _told_version: int = -1

    @property
    def episode_id(self) -> str:
        return f"{self.bdf}@{self.first_ns}"

    @property
    def actor(self) -> ev.Process | None:
        """The process to name: the vfio-steering writer, else the first writer."""
        if self.vfio_actor is not None:
            return self.vfio_actor
        return self.actors[0] if self.actors else None

    def add(self, event: ev.Event, limit: int) -> None:
        events = self.events
        if len(events) >= limit:
            # Keep the beginning of the story (the writes and the unbind) and the newest event.
            events[-1] = event
            del self._lines[limit - 1:]
            self._sorted.clear()  # a line left the story: sorted again when next told
            self.dropped += 1
        else:
            events.append(event)
        ts = event.ts_ns
        if ts > self.last_ns:
            self.last_ns = ts
        elif ts < self.first_ns:
            self.first_ns = ts
        if event.synthetic or event.resync:
            self.synthetic = self.synthetic or event.synthetic
            self.resync = self.resync or event.resync
        self.version += 1

    def add_actor(self, actor: ev.Process) -> None:
        for a in self.actors:
            if a.pid == actor.pid and a.comm == actor.comm:
                return
        if len(self.actors) < MAX_ACTORS:
            self.actors.append(actor)
            self.facts += 1

    def evidence(self) -> tuple[ev.Evidence, ...]:
        """The events as Evidence lines, in time order (ties broken by content, not arrival)."""
        if self._told_version == self.version and self._told is not None:
            return self._told
        done = self._lines
        lines = self._sorted
        if len(lines) != len(done):  # emptied when a line was dropped
            lines[:] = sorted(done)
        for e in self.events[len(done):]:
            line = ev.Evidence(ts_ns=e.ts_ns, source=e.source, kind=e.kind, text=render.evidence(e))
            done.append(line)
            if not lines or not line < lines[-1]:
                lines.append(line)
            else:  # Evidence orders by (ts_ns, source, kind, text)
                insort(lines, line)
        told = tuple(lines)
        if self.dropped:
            last = lines[-1].ts_ns if lines else self.last_ns
            told += (ev.Evidence(ts_ns=last, source="core", kind="evidence_dropped",
                                 text=f"{self.dropped} more event(s) not kept"),)
        self._told = told
        self._told_version = self.version
        return told
