"""Provides the Correlator: feed it events, get findings; ask it for a HostState snapshot.

Pure and deterministic: no I/O, no clock, no threads. Time comes only from `event.ts_ns` and
from `advance(now_ns)`, so the same events always give the same findings, live or replayed.
Rules plug in through `diag.core.rules` (one module plus one registration line each).

Hot path: a rule declares the event types it reacts to (`events`; `resync_events` adds every
event a resync produced), whether time alone matters to it (`ticks`; rules with `Timers` are
woken only once event time passes their earliest deadline), and may follow episodes
(`on_episode`, offered only for devices in the rule's `follow` set). The correlator dispatches
by type from a table built once per event class, so an event costs only the rules that care;
a rule with a method `on_<kind>` for an event kind (`on_device_bound`) gets those events there,
with no isinstance chain in `on_event`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from diag import events as ev
from diag.core.model import Model
from diag.core.rules import Rule, build_rules
from diag.core.rules._base import ConditionRule, Timers, Wake
from diag.core.state import HostState
from diag.core.thresholds import CoreConfig

_FINDING = ev.Finding


def _handler(rule: Rule, cls: type[ev.Event]) -> Callable[[Model, Any], list[ev.Finding]]:
    """What the rule is called with for events of `cls`: its `on_<kind>` if it has one."""
    specific = getattr(rule, f"on_{cls.kind}", None) if cls.kind else None
    return specific if callable(specific) else rule.on_event


def _deaf(rule: Rule) -> bool:
    """True for a rule whose `on_episode` can change nothing: ConditionRule's own, which only
    reassesses through `refresh`, with ConditionRule's `refresh` (which says nothing). Such a
    rule is not offered episodes (8 of the 11 built-in rules: an offer per rule and per event
    that joins a followed device's episode, for nothing)."""
    cls = type(rule)
    return (getattr(cls, "on_episode", None) is ConditionRule.on_episode
            and getattr(cls, "refresh", None) is ConditionRule.refresh)


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
        self._dispatch: dict[type[ev.Event], list[Callable[[Model, Any], list[ev.Finding]]]] = {}
        """Event class -> the bound `on_event` of each rule that reacts to it, built once."""
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
            (r, getattr(r, "follow", None)) for r in self.rules
            if hasattr(r, "on_episode") and not _deaf(r)
        ]
        self._followers_of: dict[str, list[Any]] = {}
        """BDF -> the rules that follow its episodes, in rule order (the rules keep it)."""
        self._every_episode = any(follow is None or not hasattr(r, "followed")
                                  for r, follow in self._followers)
        """True when some follower cannot say which devices it follows: every follower is then
        offered every episode, checked against its `follow` as it comes."""
        if not self._every_episode:
            for rank, (r, follow) in enumerate(self._followers):
                r.followed, r.follow_rank = self._followers_of, rank
                for bdf in follow or ():
                    self._followers_of.setdefault(bdf, []).append(r)

    def _rules_for(self, cls: type[ev.Event]) -> list[Rule]:
        """The rules that react to events of `cls` (their `events` include it, or are None)."""
        return [r for r in self.rules
                if (evs := getattr(r, "events", None)) is None or issubclass(cls, evs)]

    def _handlers_for(self, cls: type[ev.Event]) -> list[Callable[[Model, Any], list[ev.Finding]]]:
        handlers = self._dispatch.get(cls)
        if handlers is None:
            handlers = self._dispatch[cls] = [_handler(r, cls) for r in self._rules_for(cls)]
        return handlers

    # ---- input -------------------------------------------------------------------------------

    def feed(self, event: ev.Event) -> list[ev.Finding]:
        """Apply one event; return the finding transitions it caused (open/update/resolve)."""
        cls = type(event)
        if cls is _FINDING:
            # A replayed journal holds the findings the live agent raised; the core recomputes
            # its own, so recorded findings are not re-applied.
            return []
        self._snapshot = None
        model = self.model
        model.apply(event)
        out: list[ev.Finding] = []
        handlers = self._dispatch.get(cls)
        if handlers is None:
            handlers = self._handlers_for(cls)
        for on_event in handlers:
            found = on_event(model, event)
            if found:
                out.extend(found)
        if event.resync:
            for rule in self._resync_rules:
                if not any(getattr(h, "__self__", None) is rule for h in handlers):
                    found = rule.on_event(model, event)
                    if found:
                        out.extend(found)
        if model.touched:
            now = model.now_ns
            if not self._every_episode:
                index = self._followers_of
                for ep in model.touched:
                    following = index.get(ep.bdf)
                    if following:
                        # A copy: a rule that resolves its finding unfollows on the way.
                        for rule in tuple(following):
                            found = rule.on_episode(model, ep, now)
                            if found:
                                out.extend(found)
            else:
                self._offer_everyone(model, out, now)
        w = self._wake.at
        if self._tickers or (w is not None and model.now_ns >= w):
            out.extend(self._tick(model.now_ns))
        return self._record(out) if out else out

    def _offer_everyone(self, model: Model, out: list[ev.Finding], now: int) -> None:
        """The touched episodes to every follower that follows their device (or all of them)."""
        for ep in model.touched:
            bdf = ep.bdf
            for rule, follow in self._followers:
                if follow is not None and bdf not in follow:
                    continue
                found = rule.on_episode(model, ep, now)
                if found:
                    out.extend(found)

    def advance(self, now_ns: int) -> list[ev.Finding]:
        """Let time pass with no event (grace periods, windows); return transitions."""
        if now_ns <= self.model.now_ns:
            return []
        self._snapshot = None
        self.model.now_ns = now_ns
        return self._record(self._tick(now_ns))

    def next_due_ns(self) -> int | None:
        """The event time from which `advance` may return findings, so a caller can sleep until
        then: the earliest deadline of the rules' Timers (it may be early, never late), None when
        no deadline is set, 0 when a rule with time logic but no Timers may act at any time."""
        return 0 if self._tickers else self._wake.at

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
            # Only the rules whose own earliest deadline passed: a timed rule's on_tick acts on
            # its due Timers alone, so the others would return nothing.
            for rule in self._timed:
                nxt = rule.timers.next  # type: ignore[attr-defined]
                if nxt is not None and now_ns >= nxt:
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
        active = self._findings
        for f in transitions:
            status = f.status
            if status == "resolved":
                active.pop(f.finding_id, None)
                self._resolved.appendleft(f)
            else:
                if status == "open":
                    self.findings_total += 1
                active[f.finding_id] = f
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
