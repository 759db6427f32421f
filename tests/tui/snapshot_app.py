"""Builds the dashboard the TUI tests drive: the frozen lab journal through stand-in rules.

The real rules (diag/core/rules) evolve on their own; the TUI tests must not move when a rule's
wording does, so the journal is replayed through two small stand-in rules that raise findings of
known severities with evidence, explanation and remedy.
"""

from __future__ import annotations

from pathlib import Path

from diag import events as ev
from diag.core.correlator import Correlator
from diag.core.model import Model
from diag.core.state import HostState
from diag.runtime.playback import ReplayFeed, load_journal
from diag.tui.app import VfioWatchApp

JOURNAL = Path(__file__).resolve().parents[1] / "fixtures" / "journals" / "demo-lab.jsonl"
INCIDENT_AT = 20
"""Records applied when the VF has just been bound to vfio-pci (before the restore)."""


class StandInVfioRule:
    """Critical while a device the kernel bound to vfio-pci stays there."""

    id = "test-vfio-bind"

    def __init__(self) -> None:
        self.open: dict[str, ev.Finding] = {}

    def on_event(self, model: Model, event: ev.Event) -> list[ev.Finding]:
        if not isinstance(event, ev.DeviceBound) or event.synthetic:
            return []
        f = self.open.get(event.bdf)
        if event.driver == "vfio-pci" and f is None:
            actor = model.last_actor.get(event.bdf)
            sb = model.sandbox_for(event.bdf)
            f = ev.Finding(
                ts_ns=event.ts_ns, source="core", finding_id=f"{self.id}/{event.bdf}/{event.ts_ns}",
                rule=self.id, severity=ev.Severity.CRITICAL,
                summary=f"VF {event.bdf} bound to vfio-pci while cold_plug_vfio=no-port",
                bdf=event.bdf, sandbox_id=sb.sandbox_id if sb else None, pod=sb.pod if sb else None,
                actor=actor, first_ns=event.ts_ns, last_ns=event.ts_ns,
                evidence=(ev.Evidence(ts_ns=event.ts_ns, source=event.source, kind=event.kind,
                                      text=f"bind {event.bdf} driver=vfio-pci"),),
                explanation="Stand-in explanation: the VM will not get the device at boot.",
                remedy="Stand-in remedy: set cold_plug_vfio = \"root-port\".",
            )
            self.open[event.bdf] = f
            return [f]
        if event.driver != "vfio-pci" and f is not None:
            del self.open[event.bdf]
            from diag.events import replace

            return [replace(f, ts_ns=event.ts_ns, status="resolved", resolved_ns=event.ts_ns,
                            last_ns=event.ts_ns, resolved_reason="back on a host driver")]
        return []

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        return []


class StandInLinkRule:
    """Warning while a VF's netdev is gone."""

    id = "test-netdev-gone"

    def __init__(self) -> None:
        self.open: dict[str, ev.Finding] = {}

    def on_event(self, model: Model, event: ev.Event) -> list[ev.Finding]:
        from diag.events import replace

        if isinstance(event, ev.LinkRemoved) and event.bdf and event.bdf not in self.open:
            f = ev.Finding(
                ts_ns=event.ts_ns, source="core", finding_id=f"{self.id}/{event.bdf}/{event.ts_ns}",
                rule=self.id, severity=ev.Severity.WARNING,
                summary=f"netdev {event.ifname} of {event.bdf} vanished", bdf=event.bdf,
                netdev=event.ifname, first_ns=event.ts_ns, last_ns=event.ts_ns,
            )
            self.open[event.bdf] = f
            return [f]
        if isinstance(event, ev.LinkChanged) and event.bdf in self.open:
            f = self.open.pop(event.bdf)
            return [replace(f, ts_ns=event.ts_ns, status="resolved", resolved_ns=event.ts_ns)]
        return []

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        return []


def stand_in_correlator() -> Correlator:
    return Correlator(rules=[StandInVfioRule(), StandInLinkRule()])


def replay_feed(position: int = INCIDENT_AT, journal: Path = JOURNAL) -> ReplayFeed:
    events, header, stats = load_journal(journal)
    return ReplayFeed(events, header=header, stats=stats, autoplay=False, start_at=position,
                      correlator_factory=stand_in_correlator)


def make_app(position: int = INCIDENT_AT, **kw: object) -> VfioWatchApp:
    return VfioWatchApp(replay_feed(position), hostname="sriov-lab",
                        kernel="6.12.95+deb12-amd64", mode="REPLAY", **kw)  # type: ignore[arg-type]


def states(journal: Path = JOURNAL) -> list[HostState]:
    """The snapshot after each record of the journal (stand-in rules)."""
    events, _, _ = load_journal(journal)
    core = stand_in_correlator()
    out = []
    for e in events:
        core.feed(e)
        out.append(core.snapshot())
    return out

