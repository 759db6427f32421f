"""Provides Faults: the agent's fault-injection switch (`[faults]`), for tests, like Falco's
`simulate_drops`.

Each fault makes a real failure path run on purpose, through the same code the real failure
takes, so tests can prove the agent keeps running, says in-band what happened and ends with
its state equal to sysfs:

- `uevent_drop_percent`: that share of the kernel uevents the uevent source reads is thrown
  away as if the kernel had dropped it (ENOBUFS): counted lost from the SEQNUM gaps, then a
  resync against sysfs. Deterministic: exactly that share of every 100 reads.
- `journal_fail_writes` (after `journal_fail_after` write attempts that succeed): that many
  of the journal's write attempts fail with EIO; the journal drops and counts, retries, and on
  recovery writes `EventsLost(lost_source="journal")` and the state again.
- `crash_source` (after `crash_after_s`): that source's thread raises once; the runtime
  reports it down, restarts it with backoff, and it starts again from a fresh inventory.

Never for a production host: the agent logs `faults_injected` (a warning) at start.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from diag.common.errors import ConfigError

HINT = ("[faults] is for tests: uevent_drop_percent (0-100), journal_fail_writes and "
        "journal_fail_after (counts), crash_source (a source name) and crash_after_s (seconds)")


class InjectedFault(RuntimeError):
    """Raised where `[faults]` asked for a crash."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What to break on purpose; the defaults break nothing."""

    uevent_drop_percent: float = 0.0
    journal_fail_writes: int = 0
    journal_fail_after: int = 0
    crash_source: str = ""
    crash_after_s: float = 1.0

    @property
    def active(self) -> bool:
        return bool(self.uevent_drop_percent or self.journal_fail_writes or self.crash_source)

    def describe(self) -> dict[str, Any]:
        """The faults set, for the `faults_injected` log line."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != f.default}


NO_FAULTS = Faults()


def parse(table: Mapping[str, Any], path: str, lines: Mapping[str, int]) -> Faults:
    """The `[faults]` table; a ConfigError naming file:line and key for anything wrong."""
    known = {f.name: f for f in fields(Faults)}
    out: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}:{lines[f'faults.{key}']}" if f"faults.{key}" in lines else path
        if key not in known:
            raise ConfigError(f"{where}: unknown key faults.{key}", hint=HINT)
        if key == "crash_source":
            ok = isinstance(value, str)
        elif key in ("journal_fail_writes", "journal_fail_after"):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            ok = ok and (key != "uevent_drop_percent" or value <= 100)
        if not ok:
            raise ConfigError(f"{where}: faults.{key} = {value!r} is not allowed", hint=HINT)
        out[key] = float(value) if key in ("uevent_drop_percent", "crash_after_s") else value
    return Faults(**out)


class Share:
    """Says yes to exactly `percent` of every 100 calls, evenly spread (no randomness: a test
    knows how many were dropped). Thread-safe."""

    def __init__(self, percent: float) -> None:
        self.percent = percent
        self._acc = 0.0
        self._lock = threading.Lock()
        self.hits = 0

    def __call__(self) -> bool:
        if self.percent <= 0:
            return False
        with self._lock:
            self._acc += self.percent
            if self._acc >= 100:
                self._acc -= 100
                self.hits += 1
                return True
            return False


class Countdown:
    """Says no `after` times, then yes `times` times, then no again (the journal's failing
    writes). Used by one thread at a time (the journal's lock)."""

    def __init__(self, after: int, times: int) -> None:
        self._after = after
        self._left = times
        self.hits = 0

    def __call__(self) -> bool:
        if self._left <= 0:
            return False
        if self._after > 0:
            self._after -= 1
            return False
        self._left -= 1
        self.hits += 1
        return True
