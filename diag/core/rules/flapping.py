"""Provides rule `driver-flapping`: a device moved between drivers N times within a window.

Two controllers that disagree about a VF (the SR-IOV operator's config daemon re-applying its
policy, Kata binding it to vfio-pci) move it back and forth; a crash-looping pod does the same.
Counts binds to a new driver per device within CoreConfig.flapping_window_ns; at
CoreConfig.flapping_moves it opens, naming the actors that take turns. Resolves after a
window with no move.
"""

from __future__ import annotations

from collections import deque

from diag import events as ev
from diag.core.episodes import Episode
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule, Timers, _Open, device_label
from diag.core.thresholds import NS, CoreConfig
from diag.render import actor_label

MAX_MOVES = 256
"""Moves remembered per device: `count` reads `256` (at least) during a storm."""


@register
class DriverFlapping(ConditionRule):
    """Open when a device's driver changes flapping_moves times within flapping_window_ns."""

    id = "driver-flapping"
    events = (ev.DeviceBound, ev.DeviceRemoved)
    ticks = True

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.moves: dict[str, deque[tuple[int, str, ev.Process | None]]] = {}
        """BDF -> (time, driver, actor) of its recent binds, bounded by the window (the actors
        are named only when a flap is reported)."""
        self.timers = Timers()
        self.episodes: dict[str, list[Episode]] = {}
        """BDF -> the episodes of its recent moves (their evidence is the flap's story)."""

    def _evidence(self, bdf: str) -> tuple[ev.Evidence, ...]:
        """The story of every recent move, in time order (the newest history_per_device)."""
        lines: list[ev.Evidence] = []
        in_order = True
        for ep in self.episodes.get(bdf, ()):
            told = ep.evidence()
            # Sorted within each story, except the `evidence_dropped` line a full one ends with.
            if ep.dropped or (told and lines and told[0] < lines[-1]):
                in_order = False
            lines.extend(told)
        if not in_order:  # the moves overlapped: each story is sorted, their union is not
            lines.sort()  # Evidence orders by (ts_ns, source, kind, text)
        return tuple(lines[-self.config.history_per_device:])

    # One method per event kind (the correlator calls them directly; `on_event` dispatches).

    def on_device_removed(self, model: Model, event: ev.DeviceRemoved) -> list[ev.Finding]:
        out = self.resolve_all(self.keys_for(event.bdf), event.ts_ns, "device removed")
        self.moves.pop(event.bdf, None)
        self.episodes.pop(event.bdf, None)
        self.timers.cancel(event.bdf)
        return out

    def on_device_bound(self, model: Model, event: ev.DeviceBound) -> list[ev.Finding]:
        rec = model.devices.get(event.bdf)
        if rec is None or not rec.moves:
            return []
        last = rec.moves[-1]
        if last.ts_ns != event.ts_ns or last.to_driver != event.driver:
            return []  # a bind that changed nothing (duplicate, synthetic `bind` of the same driver)
        ep = model.episode(event.bdf)
        q = self._count(event, ep)
        if len(q) < self.config.flapping_moves:
            return []
        return self._flapping(model, event, ep, q)

    def _count(self, event: ev.DeviceBound,
               ep: Episode | None) -> deque[tuple[int, str, ev.Process | None]]:
        """Remember the move and its episode; the moves of the device within the window."""
        bdf = event.bdf
        window = self.config.flapping_window_ns
        actor = ep.actor if ep is not None else None
        q = self.moves.get(bdf)
        if q is None:
            # Enough to count a flap and name its actors; a storm saturates the count here.
            q = self.moves[bdf] = deque(maxlen=max(self.config.flapping_moves, MAX_MOVES))
        q.append((event.ts_ns, event.driver, actor))
        while q and q[0][0] < event.ts_ns - window:
            q.popleft()
        eps = self.episodes.get(bdf)
        if eps is None:
            eps = self.episodes[bdf] = []
        if ep is not None:
            for x in eps:
                if x is ep:
                    break
            else:
                eps.append(ep)
        cut = event.ts_ns - window
        keep = self.config.flapping_moves
        if len(eps) > keep or (eps and eps[0].last_ns < cut) or any(x.last_ns < cut for x in eps):
            eps[:] = [x for x in eps if x.last_ns >= cut][-keep:]
        self.timers.set(bdf, event.ts_ns + window)
        return q

    def _flapping(self, model: Model, event: ev.DeviceBound, ep: Episode | None,
                  q: deque[tuple[int, str, ev.Process | None]]) -> list[ev.Finding]:
        """Open the finding, or update it with the new count, drivers and actors."""
        bdf = event.bdf
        actor = ep.actor if ep is not None else None
        named: dict[int, str] = {}  # one actor is usually every move's: worded once
        for _, _, a in q:
            if a and id(a) not in named:
                named[id(a)] = actor_label(a)
        actors = list(dict.fromkeys(named.values()))
        drivers = list(dict.fromkeys(d for _, d, _ in q))
        turns = (f"; actors taking turns: {' and '.join(actors)}" if len(actors) > 1
                 else f"; actor: {actors[0]}" if actors else "")
        secs = self.config.flapping_window_ns // NS
        summary = (f"{device_label(model, bdf)} moved between drivers {len(q)} times within "
                   f"{secs}s ({' <-> '.join(drivers)}){turns}")
        labels = (("count", str(len(q))), ("drivers", ",".join(drivers)),
                  ("actors", ",".join(actors)))
        if bdf in self._by_bdf:
            st = self.open_[bdf]
            st.dirty = True  # evidence rendered only if the update is shown (_stale)
            f = self.update(bdf, event.ts_ns, summary=summary, labels=labels, actor=actor)
            return [f] if f is not None else []
        return [self.open(
            model, bdf, ts_ns=event.ts_ns, trigger_ns=q[0][0], bdf=bdf,
            severity=ev.Severity.WARNING,
            explanation=(
                "The device keeps changing drivers. Two controllers that disagree about this "
                "VF (e.g. the SR-IOV operator re-applying a netdevice policy while Kata binds it "
                "to vfio-pci) or a crash-looping pod do this; every move drops the VF's netdev."
            ),
            remedy=(
                "Find who moves it (the actors above) and make them agree: exclude VFs given to "
                "Kata from the operator's netdevice policy (deviceType: vfio-pci), or fix the "
                "pod that keeps restarting."
            ),
            synthetic=event.synthetic or bool(ep and ep.synthetic),
            summary=summary, labels=labels, evidence=self._evidence(bdf), actor=actor,
        )]

    def on_episode(self, model: Model, episode: Episode, now_ns: int) -> list[ev.Finding]:
        st = self.open_.get(episode.bdf)
        if st is not None and any(x is episode for x in self.episodes.get(episode.bdf, ())):
            st.dirty = True  # rendered when shown (_stale)
        return []

    def _stale(self, st: _Open) -> dict[str, object]:
        if st.dirty and st.finding.bdf is not None:
            st.dirty = False
            return {"evidence": self._evidence(st.finding.bdf)}
        return {}

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        out = []
        for bdf in self.timers.pop_due(now_ns):
            secs = self.config.flapping_window_ns // NS
            out.extend(self.resolve_all(self.keys_for(bdf), now_ns,
                                        f"no driver move for {secs}s"))
            self.moves.pop(bdf, None)
            self.episodes.pop(bdf, None)
        return out
