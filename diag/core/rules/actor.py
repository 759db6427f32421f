"""Provides rule `vfio-bind-unexpected-actor`: a bind to vfio-pci by a process not expected to.

The expected actors (CoreConfig.expected_actors, comm or exe basename) are the Kata shims,
driverctl and the SR-IOV operator's config daemon by default. A write arrives from eBPF and the
bind from uevents on different sockets, in either order: a bind whose actor is not known yet
waits in its episode until the write joins it.
"""

from __future__ import annotations

from diag import events as ev
from diag.core.episodes import VFIO_DRIVER, Episode
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule, actor_names, device_label
from diag.core.thresholds import CoreConfig
from diag.render import actor_label


@register
class VfioBindUnexpectedActor(ConditionRule):
    """Open when the process that steered a device to vfio-pci is not an expected actor."""

    id = "vfio-bind-unexpected-actor"
    events = (ev.DeviceBound, ev.DeviceUnbound, ev.DeviceRemoved)

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self._waiting: dict[str, tuple[int, Episode]] = {}
        """BDF -> (bind time, episode) of binds to vfio-pci whose actor is not known yet."""

    # One method per event kind (the correlator calls them directly; `on_event` dispatches).

    def on_device_bound(self, model: Model, event: ev.DeviceBound) -> list[ev.Finding]:
        if event.driver == VFIO_DRIVER:
            ep = model.episodes.get(event.bdf)
            if ep is None or event.bdf in self._by_bdf:
                return []
            if ep.actor is None:
                if event.bdf not in self._waiting:
                    self._follow(event.bdf)
                self._waiting[event.bdf] = (event.ts_ns, ep)
                return []
            return self._check(model, event.bdf, event.ts_ns, event.ts_ns, ep)
        if not self._gone(event.bdf):
            return []
        return self.resolve_all(self.keys_for(event.bdf), event.ts_ns,
                                f"left vfio-pci (now {event.driver or 'unbound'})")

    def on_device_unbound(self, model: Model, event: ev.DeviceUnbound) -> list[ev.Finding]:
        if not self._gone(event.bdf):
            return []
        return self.resolve_all(self.keys_for(event.bdf), event.ts_ns,
                                "left vfio-pci (now unbound)")

    def on_device_removed(self, model: Model, event: ev.DeviceRemoved) -> list[ev.Finding]:
        if not self._gone(event.bdf):
            return []
        return self.resolve_all(self.keys_for(event.bdf), event.ts_ns, "device removed")

    def _gone(self, bdf: str) -> bool:
        """The device left vfio-pci: stop waiting for its actor; True when a finding is open."""
        if self._waiting and self._waiting.pop(bdf, None) is not None:
            self._unfollow(bdf)
        return bdf in self._by_bdf

    def on_episode(self, model: Model, episode: Episode, now_ns: int) -> list[ev.Finding]:
        out = super().on_episode(model, episode, now_ns)
        waiting = self._waiting.get(episode.bdf)
        if waiting is not None and waiting[1] is episode and episode.actor is not None:
            del self._waiting[episode.bdf]
            self._unfollow(episode.bdf)
            out.extend(self._check(model, episode.bdf, now_ns, waiting[0], episode))
        return out

    def _check(self, model: Model, bdf: str, ts_ns: int, bind_ns: int,
               ep: Episode) -> list[ev.Finding]:
        actor = ep.vfio_actor or ep.actor
        if actor is None:
            return []
        names = actor_names(actor)
        expected = self.config.expected_actors
        if any(n in expected for n in names):
            return []
        return [self.open(
            model, bdf, ts_ns=ts_ns, trigger_ns=bind_ns, bdf=bdf, episode=ep,
            severity=ev.Severity.WARNING,
            summary=f"{device_label(model, bdf)} bound to vfio-pci by {actor_label(actor)}, "
                    "which is not an expected actor",
            actor=actor,
            explanation=(
                f"{actor_label(actor)} (exe {actor.exe or 'unknown'}, parents "
                f"{' < '.join(actor.ancestry) or 'unknown'}) steered {bdf} to vfio-pci. Only "
                f"{', '.join(expected) or 'no process'} are expected to (core.expected_actors)."
            ),
            remedy=(
                "Find out why this process rebinds VFs. If it is legitimate, add its comm or exe "
                "basename to core.expected_actors; otherwise stop it and give the VF back to its "
                "host driver."
            ),
            labels=(("actor_names", ",".join(names)), ("episode", ep.episode_id)),
        )]

    def refresh(self, model: Model, key: str, finding: ev.Finding, episode: Episode | None,
                now_ns: int) -> ev.Finding | None:
        """A write that reached the core after the bind can name the real steering actor: an
        expected one resolves the finding, another one updates it."""
        if episode is None:
            return None
        actor = episode.vfio_actor or episode.actor
        if actor is None or actor == finding.actor:
            return None
        names = actor_names(actor)
        if any(n in self.config.expected_actors for n in names):
            return self.resolve(key, now_ns, f"the steering write was by {actor_label(actor)}, "
                                             "an expected actor")
        return self.update(
            key, now_ns, actor=actor,
            summary=f"{device_label(model, key)} bound to vfio-pci by {actor_label(actor)}, "
                    "which is not an expected actor",
            labels=(("actor_names", ",".join(names)), ("episode", episode.episode_id)),
        )
