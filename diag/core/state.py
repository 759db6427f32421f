"""Provides HostState, the frozen snapshot every consumer reads, and the feeds' protocols.

SnapshotFeed is what publishes snapshots (the live pipeline, a journal replay); Playback and
PlaybackStatus are the controls a replay adds, which the dashboard drives.

The correlator owns mutable internals; what leaves the core is this immutable view. The TUI,
the metrics collector and postmortem reports read only snapshots, so live and replay look the
same (dolphie's live = replay).

The frozen Structs here are not tracked by the cycle collector (`gc=False`, as the records of
`diag.events`): they hold only immutable values, so no cycle can run through them, and the
model makes one on every link change and driver move.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import msgspec

from diag import events as ev
from diag.core.kata_exposure import Assessment


class DriverMove(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One step of a device's driver timeline."""

    ts_ns: int
    from_driver: str | None
    to_driver: str | None
    actor: ev.Process | None = None
    synthetic: bool = False
    resync: bool = False


class LinkNote(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One step of a device's link history (netdev appeared, vanished, changed state)."""

    ts_ns: int
    ifname: str
    netns: str
    what: str
    """`added`, `removed`, `up`, `down`, `moved`, ..."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceView:
    """What the agent knows about one PCI device now."""

    device: ev.PciDevice
    """Static identity and the attributes of the last scan (driver fields may be stale)."""
    driver: str | None
    """Current driver as followed from events."""
    driver_override: str | None = None
    driver_at_start: str | None = None
    """Driver when the agent first saw the device (inventory, not a rebind)."""
    since_ns: int | None = None
    """When the current driver was bound (or the device was last unbound)."""
    netdev: str | None = None
    netns: str | None = None
    """Label of the namespace its netdev is in (`host`, a netns name, `pid:N`)."""
    pod: str | None = None
    pod_namespace: str | None = None
    sandbox_id: str | None = None
    sandbox_running: bool = False
    """True when `sandbox_id` names a sandbox that is running now (not one that went away)."""
    actor: ev.Process | None = None
    """The process that moved the device last (its current episode's mover, else the last
    writer of one of its control files)."""
    moves: tuple[DriverMove, ...] = ()
    """Bounded driver timeline, oldest first."""
    links: tuple[LinkNote, ...] = ()
    """Bounded link history, oldest first."""

    @property
    def bdf(self) -> str:
        return self.device.bdf


class Owner(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Who a device belongs to and who moved it: the one answer every view uses (the device
    row, the device story and the findings), derived once by `Model.owner` (a Struct: rules ask
    it while wording findings, and a frozen dataclass costs a setattr per field to build)."""

    sandbox_id: str | None = None
    pod: str | None = None
    pod_namespace: str | None = None
    actor: ev.Process | None = None
    running: bool = False
    """True when the sandbox is running now."""


class LinkView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One network interface in one namespace."""

    ifindex: int
    ifname: str
    netns: ev.NetnsRef
    operstate: str = ""
    carrier: bool | None = None
    admin_up: bool = False
    mac: str = ""
    bdf: str | None = None
    since_ns: int = 0


class SourceHealth(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One source's health as the dashboard header and the metrics show it."""

    name: str
    up: bool = False
    mode: str = ""
    reason: str = ""
    hint: str = ""
    events: int = 0
    lost: int = 0
    """Events lost, counted exactly (uevent SEQNUM gaps, eBPF and queue counters, journal)."""
    lost_incidents: int = 0
    """Losses whose size is unknown (count=None: rtnetlink broadcasts carry no sequence
    number), one per incident: a lower bound, not a number of events."""
    resyncs: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HostState:
    """An immutable snapshot of everything the core knows at `ts_ns`."""

    ts_ns: int = 0
    devices: tuple[DeviceView, ...] = ()
    """Ordered by BDF."""
    links: tuple[LinkView, ...] = ()
    netns: tuple[ev.NetnsRef, ...] = ()
    sandboxes: tuple[ev.SandboxStarted, ...] = ()
    kata_configs: tuple[ev.KataConfig, ...] = ()
    kata_facts: tuple[ev.KataHandlerFacts, ...] = ()
    """Each Kata handler's version, effective cold_plug_vfio and VFs pods can be given."""
    kata_exposure: tuple[Assessment, ...] = ()
    """Each handler's exposure to the known Kata VFIO bugs (rows exposed now or latent)."""
    findings: tuple[ev.Finding, ...] = ()
    """Active findings and the most recently resolved ones, newest first."""
    sources: tuple[SourceHealth, ...] = ()
    recent: tuple[ev.Event, ...] = ()
    """The newest events (bounded ring), oldest first."""
    events_total: int = 0
    findings_total: int = 0
    lost_total: int = 0
    counts_by_rule: tuple[tuple[str, str, int], ...] = field(default_factory=tuple)
    """(rule, severity, active count) for every active finding group."""

    def device(self, bdf: str) -> DeviceView | None:
        for d in self.devices:
            if d.bdf == bdf:
                return d
        return None

    @property
    def active_findings(self) -> tuple[ev.Finding, ...]:
        return tuple(f for f in self.findings if f.active)


SnapshotListener = Callable[[HostState], None]


class SnapshotFeed(Protocol):
    """Something that publishes HostState snapshots: the live pipeline or a journal replay."""

    def subscribe(self, listener: SnapshotListener) -> None:
        """Call `listener` with each new snapshot (from any thread)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PlaybackStatus:
    """Where a journal replay is; read by the dashboard's header on every frame."""

    position: int
    """Records applied so far (0 = none)."""
    total: int
    ts_ns: int
    """Recorded time of the last applied record (0 before the first)."""
    playing: bool
    speed: float
    done: bool
    """Every record has been applied."""


@runtime_checkable
class Playback(Protocol):
    """Controls of a journal replay (play/pause/step/seek/speed)."""

    def status(self) -> PlaybackStatus: ...

    def play(self) -> None: ...

    def pause(self) -> None: ...

    def step(self, n: int = 1) -> None:
        """Apply `n` more records (negative: go back), then pause."""

    def seek(self, position: int) -> None:
        """Jump to record `position` (0 = before the first), keeping the play state."""

    def set_speed(self, speed: float) -> None: ...

    def first_ts_ns(self) -> int:
        """Recorded time of the first record (what `+SECONDS` and a bare time of day mean)."""

    def seek_time(self, ts_ns: int) -> None:
        """Jump to just after the last record stamped at or before `ts_ns`."""

    def next_finding(self, direction: int = 1) -> bool:
        """Pause just after the next (1) or previous (-1) record at which a finding opened;
        False when there is none that way."""
