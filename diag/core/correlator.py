"""Provides the Correlator: feed it events, get findings; ask it for a HostState snapshot.

Pure and deterministic: no I/O, no clock, no threads. Time comes only from `event.ts_ns` and
from `advance(now_ns)`, so the same events always give the same findings, live or replayed.
Rules plug in through `diag.core.rules` (one module plus one registration line each).

Hot path: a rule declares the event types it reacts to (`events`; `resync_events` adds every
event a resync produced), whether time alone matters to it (`ticks`; rules with `Timers` are
woken only once event time passes their earliest deadline), and may follow episodes
(`on_episode`, offered only for devices in the rule's `follow` set). The correlator dispatches
by type from a table built once per event class, so an event costs only the rules that care.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from diag import events as ev
from diag.core.model import Model
from diag.core.rules import Rule, build_rules
from diag.core.rules._base import Timers, Wake
from diag.core.state import HostState
from diag.core.thresholds import CoreConfig


class Correlator:
    """Turns a time-ordered event stream into state and findings."""

    def __init__(self, config: CoreConfig | None = None, rules: Iterable[Rule] | None = None) -> None:
        self.config = config or CoreConfig()
        self.model = Model(self.config)
        self.rules: list[Rule] = list(rules) if rules is not None else build_rules(self.config)
        self._findings: dict[str, ev.Finding] = {}
        self._resolved: deque[ev.Finding] = deque(maxlen=self.config.resolved_kept)
        self.findings_total = 0
        self._snapshot: HostState | None = None
        self._dispatch: dict[type[ev.Event], list[Rule]] = {}
        self._wake = Wake()
        self._timed: list[Rule] = []
        self._tickers: list[Rule] = []
        """Rules ticked on every event: those with time logic but no Timers to wake them."""
        for r in self.rules:
            if not getattr(r, "ticks", True):
                continue
            timers = getattr(r, "timers", None)
            if isinstance(timers, Timers):
                timers.wake = self._wake
                if timers.next is not None and (self._wake.at is None or timers.next < self._wake.at):
                    self._wake.at = timers.next
                self._timed.append(r)
            else:
                self._tickers.append(r)
        self._resync_rules = [r for r in self.rules if getattr(r, "resync_events", False)]
        self._followers: list[tuple[Any, dict[str, int] | None]] = [
            (r, getattr(r, "follow", None)) for r in self.rules if hasattr(r, "on_episode")
        ]

    def _rules_for(self, cls: type[ev.Event]) -> list[Rule]:
        rules = self._dispatch.get(cls)
        if rules is None:
            rules = [r for r in self.rules
                     if (evs := getattr(r, "events", None)) is None or issubclass(cls, evs)]
            self._dispatch[cls] = rules
        return rules

    # ---- input -------------------------------------------------------------------------------

    def feed(self, event: ev.Event) -> list[ev.Finding]:
        """Apply one event; return the finding transitions it caused (open/update/resolve)."""
        cls = type(event)
        if cls is ev.Finding:
            # A replayed journal holds the findings the live agent raised; the core recomputes
            # its own, so recorded findings are not re-applied.
            return []
        self._snapshot = None
        model = self.model
        model.apply(event)
        out: list[ev.Finding] = []
        rules = self._dispatch.get(cls)
        if rules is None:
            rules = self._rules_for(cls)
        for rule in rules:
            found = rule.on_event(model, event)
            if found:
                out.extend(found)
        if event.resync:
            for rule in self._resync_rules:
                if rule not in rules:
                    found = rule.on_event(model, event)
                    if found:
                        out.extend(found)
        if model.touched:
            now = model.now_ns
            for ep in model.touched:
                bdf = ep.bdf
                for rule, follow in self._followers:
                    if follow is not None and bdf not in follow:
                        continue
                    found = rule.on_episode(model, ep, now)
                    if found:
                        out.extend(found)
        w = self._wake.at
        if self._tickers or (w is not None and model.now_ns >= w):
            out.extend(self._tick(model.now_ns))
        return self._record(out) if out else out

    def advance(self, now_ns: int) -> list[ev.Finding]:
        """Let time pass with no event (grace periods, windows); return transitions."""
        if now_ns <= self.model.now_ns:
            return []
        self._snapshot = None
        self.model.now_ns = now_ns
        return self._record(self._tick(now_ns))

    def _tick(self, now_ns: int) -> list[ev.Finding]:
        out: list[ev.Finding] = []
        model = self.model
        for rule in self._tickers:
            found = rule.on_tick(model, now_ns)
            if found:
                out.extend(found)
        wake = self._wake
        if wake.at is not None and now_ns >= wake.at:
            wake.at = None
            for rule in self._timed:
                found = rule.on_tick(model, now_ns)
                if found:
                    out.extend(found)
            # Deadlines set while ticking already lowered `wake.at`; add the rest.
            for rule in self._timed:
                nxt = rule.timers.next  # type: ignore[attr-defined]
                if nxt is not None and (wake.at is None or nxt < wake.at):
                    wake.at = nxt
        return out

    def _record(self, transitions: list[ev.Finding]) -> list[ev.Finding]:
        for f in transitions:
            if f.status == "open":
                self.findings_total += 1
            if f.status == "resolved":
                self._findings.pop(f.finding_id, None)
                self._resolved.appendleft(f)
            else:
                self._findings[f.finding_id] = f
        return transitions

    # ---- output ------------------------------------------------------------------------------

    @property
    def active(self) -> list[ev.Finding]:
        return list(self._findings.values())

    def snapshot(self) -> HostState:
        """The current state, frozen. Cached until the next event."""
        if self._snapshot is not None:
            return self._snapshot
        current = dict(self._findings)
        for rule in self.rules:
            now = getattr(rule, "current", None)
            if now is not None:
                # Rules keep evidence that did not warrant an `updated` transition.
                for f in now():
                    if f.finding_id in current:
                        current[f.finding_id] = f
        active = sorted(current.values(), key=lambda f: (-f.severity.rank, -f.last_ns, f.finding_id))
        counts: dict[tuple[str, str], int] = {}
        for f in active:
            key = (f.rule, f.severity.label)
            counts[key] = counts.get(key, 0) + 1
        snap = replace(
            self.model.snapshot(),
            findings=tuple(active) + tuple(self._resolved),
            findings_total=self.findings_total,
            counts_by_rule=tuple((r, s, n) for (r, s), n in sorted(counts.items())),
        )
        self._snapshot = snap
        return snap
