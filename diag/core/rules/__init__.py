"""Provides the Rule protocol and the rule registry: one module plus one line per rule.

A rule reads the core's Model and returns Finding transitions. Rule ids are a public contract
(logs, metrics, journal, postmortem JSON all carry them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from diag import events as ev

if TYPE_CHECKING:
    from diag.core.config import CoreConfig
    from diag.core.model import Model


class Rule(Protocol):
    """One detection rule.

    Optional members the correlator uses when present: `events` (tuple of the event classes
    the rule reacts to; absent or None = every event), `ticks` (False when time alone never
    changes its findings), `on_episode(model, episode, now_ns)` (new evidence joined a device
    episode). The built-in rules get them from `diag.core.rules._base.ConditionRule`.
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
RULES: dict[str, RuleFactory] = {}
"""Rule id -> factory, in registration order."""


def register(rule_id: str) -> Callable[[RuleFactory], RuleFactory]:
    """Class/function decorator that registers a rule factory under its stable id."""

    def deco(factory: RuleFactory) -> RuleFactory:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id!r} registered twice")
        RULES[rule_id] = factory
        return factory

    return deco


def build_rules(config: CoreConfig) -> list[Rule]:
    """Instantiate every registered rule that the configuration does not disable."""
    # Importing the modules runs their @register lines; one line per rule module.
    from diag.core.rules import builtin  # noqa: F401

    return [f(config) for rid, f in RULES.items() if rid not in config.disabled_rules]
