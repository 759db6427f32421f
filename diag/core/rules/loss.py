"""Provides rule `event-loss`: a source lost events; says which, how many, and what the resync
changed.

Open on EventsLost (per lost source; repeated losses update the count). The Resynced that
follows, and the resync-marked events it produces, are gathered as evidence; the finding
resolves one episode window after the resync (or at once when the resync found no change),
saying what changed. A source that cannot resync keeps its finding open.
"""

from __future__ import annotations

from diag import events as ev
from diag import render
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule, Timers
from diag.core.thresholds import CoreConfig

MAX_CHANGES = 20


@register
class EventLoss(ConditionRule):
    """Open per source that lost events; resolve after its resync, naming the changes."""

    id = "event-loss"
    events = (ev.EventsLost, ev.Resynced)
    resync_events = True
    """Also offered every event marked `resync` (the differences a resync found)."""
    ticks = True

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.lost: dict[str, int | None] = {}
        self.changes: dict[str, list[ev.Evidence]] = {}
        self.resynced: dict[str, ev.Resynced] = {}
        self.timers = Timers()

    def on_event(self, model: Model, event: ev.Event) -> list[ev.Finding]:
        if not self.open_:
            if isinstance(event, ev.EventsLost):
                return self._lost(model, event)
            return []
        if isinstance(event, ev.EventsLost):
            return self._lost(model, event)
        if isinstance(event, ev.Resynced):
            return self._resynced(event)
        if event.resync and self.resynced:
            for src in sorted(self.resynced):
                if src == event.source or len(self.resynced) == 1:
                    ch = self.changes.setdefault(src, [])
                    if len(ch) < MAX_CHANGES:
                        ch.append(ev.Evidence(ts_ns=event.ts_ns, source=event.source,
                                              kind=event.kind, text=render.evidence(event)))
                    break
        return []

    def _evidence(self, key: str) -> tuple[ev.Evidence, ...]:
        st = self.open_.get(key)
        base = st.finding.evidence if st else ()
        return base

    def _lost(self, model: Model, e: ev.EventsLost) -> list[ev.Finding]:
        src = e.lost_source
        line = ev.Evidence(ts_ns=e.ts_ns, source=e.source, kind=e.kind,
                           text=f"{src} lost {e.count if e.count is not None else 'some'} "
                                f"event(s){': ' + e.reason if e.reason else ''}")
        prev = self.lost.get(src, 0)
        total = None if prev is None or e.count is None else prev + e.count
        self.lost[src] = total
        how_many = str(total) if total is not None else "an unknown number of"
        summary = f"source {src} lost {how_many} events" + (f" ({e.reason})" if e.reason else "")
        labels = (("lost_source", src), ("count", "" if total is None else str(total)))
        if src in self.open_:
            ev_old = self._evidence(src)
            self.resynced.pop(src, None)
            self.timers.cancel(src)
            f = self.update(src, e.ts_ns, summary=summary, labels=labels,
                            evidence=((*ev_old, line))[-self.config.history_per_device:])
            return [f] if f is not None else []
        return [self.open(
            model, src, ts_ns=e.ts_ns, trigger_ns=e.ts_ns, severity=ev.Severity.WARNING,
            summary=summary, labels=labels, evidence=(line,),
            synthetic=e.synthetic,
            explanation=(
                f"{src} dropped events (socket buffer overrun, ring-buffer loss or queue "
                "overflow). Moves that happened in the gap are known only from the resync "
                "that follows; their order and their actors are lost."
            ),
            remedy=(
                "Usually transient (a storm of uevents). If it repeats, raise the source's "
                "buffer (sources.<name> in the config) and check the agent's CPU share."
            ),
        )]

    def _resynced(self, e: ev.Resynced) -> list[ev.Finding]:
        src = e.resynced_source
        if src not in self.open_:
            return []
        self.resynced[src] = e
        self.changes[src] = []
        line = ev.Evidence(ts_ns=e.ts_ns, source=e.source, kind=e.kind,
                           text=f"{src} resynced: {e.changes} change(s)"
                                + (f" ({e.reason})" if e.reason else ""))
        if e.changes == 0:
            self.resynced.pop(src, None)
            self.update(src, e.ts_ns, evidence=(*self._evidence(src), line))
            f = self.resolve(src, e.ts_ns, f"{src} resynced at {e.ts_ns}: no difference found")
            self.lost.pop(src, None)
            return [f] if f is not None else []
        self.timers.set(src, e.ts_ns + self.config.episode_window_ns)
        f = self.update(src, e.ts_ns, evidence=(*self._evidence(src), line))
        return [f] if f is not None else []

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        out = []
        for src in self.timers.pop_due(now_ns):
            r = self.resynced.pop(src, None)
            changes = self.changes.pop(src, [])
            if r is None:
                continue
            listed = "; ".join(c.text for c in changes[:5])
            more = f" (+{len(changes) - 5} more)" if len(changes) > 5 else ""
            self.update(src, now_ns, evidence=self._evidence(src) + tuple(changes))
            f = self.resolve(src, now_ns,
                             f"{src} resynced at {r.ts_ns}: {r.changes} change(s)"
                             + (f": {listed}{more}" if listed else ""))
            if f is not None:
                self.lost.pop(src, None)
                out.append(f)
        return out
