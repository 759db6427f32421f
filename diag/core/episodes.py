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

Episodes keep the events themselves and render Evidence lines only when a finding needs them:
the hot path appends a reference, it formats nothing. Each episode holds at most
`CoreConfig.history_per_device` events; each device keeps only its current episode, so memory
is bounded by the number of devices, not by uptime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diag import events as ev

VFIO_DRIVER = "vfio-pci"
MAX_ACTORS = 8
"""Distinct writers kept per episode (a storm of writers does not grow it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LostNetdev:
    """The netdev a device lost when it was unbound, and who had it."""

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


@dataclass(slots=True)
class Episode:
    """One device move as told by every source (mutable; only the Model changes it)."""

    bdf: str
    first_ns: int
    last_ns: int
    events: list[ev.Event] = field(default_factory=list)
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
    actors: list[ev.Process] = field(default_factory=list)
    """Distinct processes that wrote a control file about this device, first writer first."""
    vfio_actor: ev.Process | None = None
    """The process whose write steered the device to vfio-pci (override, new_id, bind, probe)."""
    controls: list[str] = field(default_factory=list)
    """Distinct controls written, first written first (`driver_override`, `unbind`, ...)."""
    lost: LostNetdev | None = None
    sandbox_id: str | None = None
    """A sandbox named by the actor or a log line."""
    signatures: list[str] = field(default_factory=list)
    """Kata/QEMU/kernel log signatures seen, first seen first."""
    synthetic: bool = False
    """True when a kernel event of the episode was synthetic (SYNTH_UUID)."""
    resync: bool = False
    version: int = 0
    """Bumped on every event that joins; rules compare it to know the evidence grew."""
    facts: int = 0
    """Bumped when what the episode says changes (actor, lost netdev, signature, sandbox);
    rules reassess a finding only then, and otherwise just mark its evidence stale."""
    _lines: list[ev.Evidence] = field(default_factory=list)
    """Evidence rendered so far, parallel to `events` (each event is described once)."""

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
        if len(self.events) >= limit:
            # Keep the beginning of the story (the writes and the unbind) and the newest event.
            self.events[-1] = event
            del self._lines[limit - 1:]
            self.dropped += 1
        else:
            self.events.append(event)
        if event.ts_ns > self.last_ns:
            self.last_ns = event.ts_ns
        if event.ts_ns < self.first_ns:
            self.first_ns = event.ts_ns
        if event.synthetic:
            self.synthetic = True
        if event.resync:
            self.resync = True
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
        done = self._lines
        for e in self.events[len(done):]:
            done.append(ev.Evidence(ts_ns=e.ts_ns, source=e.source, kind=e.kind, text=describe(e)))
        lines = sorted(done, key=_order)
        if self.dropped:
            last = lines[-1].ts_ns if lines else self.last_ns
            lines.append(ev.Evidence(ts_ns=last, source="core", kind="evidence_dropped",
                                     text=f"{self.dropped} more event(s) not kept"))
        return tuple(lines)


def _order(x: ev.Evidence) -> tuple[int, str, str, str]:
    return (x.ts_ns, x.source, x.kind, x.text)


def actor_label(p: ev.Process | None) -> str:
    """`comm[pid]`, with the pod when known; `unknown process` for None."""
    if p is None:
        return "unknown process"
    name = p.comm or (p.exe.rsplit("/", 1)[-1] if p.exe else "?")
    text = f"{name}[{p.pid}]"
    if p.sandbox_id:
        text += f" (sandbox {p.sandbox_id[:12]})"
    elif p.pod:
        text += f" (pod {p.pod_namespace or '?'}/{p.pod})"
    return text


def _netns_label(n: ev.NetnsRef) -> str:
    text = n.label
    if n.pod:
        text += f" (pod {n.pod_namespace or '?'}/{n.pod})"
    return text


def describe(e: ev.Event) -> str:
    """One line saying what an event reports, for a finding's evidence (deterministic)."""
    fn = _DESCRIBE.get(type(e))
    text = fn(e) if fn is not None else e.kind.replace("_", " ")
    if e.synthetic:
        text += " [synthetic]"
    if e.resync:
        text += " [resync]"
    return text


def _d_write(e: ev.Event) -> str:
    assert isinstance(e, ev.SysfsWriteObserved)
    res = "ok" if e.result >= 0 else f"failed ({e.result})"
    if e.stage == "open":  # tracepoint mode, open-only variant: the write itself is unseen
        text = f"{actor_label(e.actor)} opened {e.path} for writing: {res}"
        if e.value_recovered:
            text += f"; value {e.value!r} recovered ({_RECOVERED_FROM.get(e.control, 'read back')})"
        return text
    return f"{actor_label(e.actor)} wrote {e.value!r} to {e.path}: {res}"


_RECOVERED_FROM = {"unbind": "from the unbind that followed", "bind": "from the bind that followed",
                   "drivers_probe": "from the bind that followed"}


def _d_bound(e: ev.Event) -> str:
    assert isinstance(e, ev.DeviceBound)
    frm = f" (was {e.previous_driver})" if e.previous_driver else ""
    return f"{e.bdf} bound to {e.driver}{frm}"


def _d_unbound(e: ev.Event) -> str:
    assert isinstance(e, ev.DeviceUnbound)
    frm = f" from {e.previous_driver}" if e.previous_driver else ""
    return f"{e.bdf} unbound{frm}"


def _d_changed(e: ev.Event) -> str:
    assert isinstance(e, ev.DeviceChanged)
    if e.attribute:
        return f"{e.bdf} {e.attribute} = {e.value!r}"
    return f"{e.bdf} changed (driver {e.driver or 'none'})"


def _d_netdev_removed(e: ev.Event) -> str:
    assert isinstance(e, ev.NetdevRemoved)
    idx = f" (ifindex {e.ifindex})" if e.ifindex is not None else ""
    return f"netdev {e.ifname}{idx} of {e.bdf} removed"


def _d_netdev_added(e: ev.Event) -> str:
    assert isinstance(e, ev.NetdevAdded)
    idx = f" (ifindex {e.ifindex})" if e.ifindex is not None else ""
    return f"netdev {e.ifname}{idx} of {e.bdf} added"


def _d_link_removed(e: ev.Event) -> str:
    assert isinstance(e, ev.LinkRemoved)
    return f"link {e.ifname} (ifindex {e.ifindex}) removed from netns {_netns_label(e.netns)}"


def _d_link_changed(e: ev.Event) -> str:
    assert isinstance(e, ev.LinkChanged)
    state = f" {e.operstate}" if e.operstate else ""
    return f"link {e.ifname} (ifindex {e.ifindex}){state} in netns {_netns_label(e.netns)}"


def _d_vfio_added(e: ev.Event) -> str:
    assert isinstance(e, ev.VfioDeviceAdded)
    return f"vfio node {e.devname or '?'} added" + (f" (group {e.group})" if e.group is not None else "")


def _d_vfio_removed(e: ev.Event) -> str:
    assert isinstance(e, ev.VfioDeviceRemoved)
    return f"vfio node {e.devname or '?'} removed" + (f" (group {e.group})" if e.group is not None else "")


def _d_log(e: ev.Event) -> str:
    assert isinstance(e, ev.LogLineMatched)
    where = f" ({e.origin})" if e.origin else ""
    return f"[{e.signature}]{where} {e.text}"


def _d_held(e: ev.Event) -> str:
    assert isinstance(e, ev.VfioGroupHeld)
    return f"/dev/vfio/{e.group} held by {actor_label(e.holder)}"


def _d_released(e: ev.Event) -> str:
    assert isinstance(e, ev.VfioGroupReleased)
    who = f" by pid {e.pid}" if e.pid is not None else ""
    return f"/dev/vfio/{e.group} released{who}"


def _d_added(e: ev.Event) -> str:
    assert isinstance(e, ev.DeviceAdded)
    vf = f" (VF {e.vf_index} of {e.pf})" if e.pf else ""
    return f"{e.bdf} appeared{vf}"


def _d_removed(e: ev.Event) -> str:
    assert isinstance(e, ev.DeviceRemoved)
    return f"{e.bdf} removed"


def _d_sandbox(e: ev.Event) -> str:
    assert isinstance(e, ev.SandboxStarted)
    pod = f" pod {e.pod_namespace or '?'}/{e.pod}" if e.pod else ""
    return f"sandbox {e.sandbox_id[:12]} ({e.runtime}){pod} cold_plug_vfio={e.cold_plug_vfio}"


def _d_sandbox_stopped(e: ev.Event) -> str:
    assert isinstance(e, ev.SandboxStopped)
    return f"sandbox {e.sandbox_id[:12]} stopped"


_DESCRIBE = {
    ev.SysfsWriteObserved: _d_write,
    ev.DeviceBound: _d_bound,
    ev.DeviceUnbound: _d_unbound,
    ev.DeviceChanged: _d_changed,
    ev.NetdevRemoved: _d_netdev_removed,
    ev.NetdevAdded: _d_netdev_added,
    ev.LinkRemoved: _d_link_removed,
    ev.LinkChanged: _d_link_changed,
    ev.VfioDeviceAdded: _d_vfio_added,
    ev.VfioDeviceRemoved: _d_vfio_removed,
    ev.LogLineMatched: _d_log,
    ev.VfioGroupHeld: _d_held,
    ev.VfioGroupReleased: _d_released,
    ev.DeviceAdded: _d_added,
    ev.DeviceRemoved: _d_removed,
    ev.SandboxStarted: _d_sandbox,
    ev.SandboxStopped: _d_sandbox_stopped,
}
