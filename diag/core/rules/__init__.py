"""Provides the Rule protocol and the rule registry: one module plus one line per rule.

A rule module decorates its class with `@register` (its `id` is the registry key) and adds one
line to `RULES`'s module list.

A rule reads the core's Model and returns Finding transitions. Rule ids are a public contract
(logs, metrics, journal, postmortem JSON all carry them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from diag import events as ev
from diag.common.registry import Registry

if TYPE_CHECKING:
    from diag.core.model import Model
    from diag.core.thresholds import CoreConfig


class Rule(Protocol):
    """One detection rule.

    Optional members the correlator uses when present: `events` (tuple of the event classes
    the rule reacts to; absent or None = every event), `ticks` (False when time alone never
    changes its findings), `on_episode(model, episode, now_ns)` (new evidence joined a device
    episode), `on_<kind>(model, event)` for one event kind (`on_device_bound`: the correlator
    calls it for that kind instead of `on_event`, with no isinstance chain; `on_event` stays the
    entry for every kind). The built-in rules get them from `diag.core.rules._base.ConditionRule`.
    """

    @property
    def id(self) -> str:
        """The stable rule id."""
        ...

    def on_event(self, model: Model, event: ev.Event) -> list[ev.Finding]:
        """React to an event already folded into `model`."""
        ...

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        """React to time passing (grace periods, windows)."""
        ...


RuleFactory = Callable[["CoreConfig"], Rule]
RULES: Registry[RuleFactory] = Registry("rule", [
    "diag.core.rules.actor",
    "diag.core.rules.coldplug",
    "diag.core.rules.flapping",
    "diag.core.rules.iommu",
    "diag.core.rules.kata_config",
    "diag.core.rules.kata_errors",
    "diag.core.rules.kata_exposure",
    "diag.core.rules.loss",
    "diag.core.rules.netdev",
    "diag.core.rules.stranded",
    "diag.core.rules.stuck",
])
"""Rule id -> factory, in registration order (the order rules see each event); one line per
built-in rule module."""

_R = TypeVar("_R", bound=type)


def register(cls: _R) -> _R:
    """Class decorator registering a rule under its `id` (the stable id, written once, on the
    class)."""
    RULES.add(cls.id, cls)  # type: ignore[attr-defined]
    return cls


def build_rules(config: CoreConfig) -> list[Rule]:
    """Instantiate every registered rule that the configuration does not disable (a rule module
    that cannot be imported is in `RULES.failures`, for the agent to log and `check` to show)."""
    return [f(config) for rid, f in RULES.load().items() if rid not in config.disabled_rules]
