"""Provides the postmortem's result: the Report, its bounded timeline Entries and FindingBook.

Everything a postmortem found, for any renderer (`diag.postmortem.output`): the inputs and how
each was read and placed, the clock notes, the timeline (bounded), the findings (active ones
and the newest resolved ones, with totals for all), and the exit status.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from diag import events as ev
from diag.core.state import HostState
from diag.postmortem.inputs import Input, Options

BOOT_RELATIVE_NS = 10 * 365 * 86400 * 1_000_000_000
"""Stamps below this are read as time since boot (a monotonic input never aligned)."""



@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the timeline."""

    ts_ns: int
    input: int
    """Index into `Report.inputs`; -1 for findings raised by the replay."""
    event: ev.Event
    uncertainty_ns: int = 0
    """How far off the stamp may be; -1 when unknown (unaligned)."""
    order_uncertain: bool = False
    """Its order against a neighbour from another input is within the clocks' uncertainty."""
    static: bool = False
    """From a state listing with no time of its own (configuration, lspci): placed first."""
    seq: int = 0
    """Position among all the entries that passed the filters (1-based); a jump between two
    kept entries is a stretch the bounded timeline left out."""


class FindingBook:
    """Final state of findings, in the order they opened, with bounded memory.

    Active findings are always kept; of the resolved ones the newest `keep_resolved` (the live
    agent keeps `resolved_kept` too). Totals per rule and severity, and the worst severity,
    count every finding ever seen, so the exit status and the summary stay exact.
    """

    def __init__(self, keep_resolved: int) -> None:
        self.keep = keep_resolved
        self.items: dict[str, ev.Finding] = {}
        self._resolved: deque[str] = deque()
        self.total = 0
        self.evicted = 0
        self.by_rule: dict[tuple[str, str], int] = {}
        self.worst: ev.Severity | None = None

    def add(self, f: ev.Finding) -> None:
        if f.finding_id not in self.items:
            self.total += 1
            key = (f.rule, f.severity.label)
            self.by_rule[key] = self.by_rule.get(key, 0) + 1
        if self.worst is None or f.severity > self.worst:
            self.worst = f.severity
        self.items[f.finding_id] = f
        if f.status == "resolved":
            self._resolved.append(f.finding_id)
            while len(self._resolved) > self.keep:
                old = self._resolved.popleft()
                kept = self.items.get(old)
                if kept is not None and kept.status == "resolved":
                    del self.items[old]
                    self.evicted += 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FindingBook) and self.items == other.items and \
            self.total == other.total and self.by_rule == other.by_rule


@dataclass(slots=True)
class Report:
    """Everything a postmortem found, for any renderer."""

    inputs: list[Input]
    timeline: list[Entry]
    timeline_total: int = 0
    """Entries that passed the filters (`timeline` keeps at most `timeline_limit` of them)."""
    events_total: int = 0
    findings: list[ev.Finding] = field(default_factory=list)
    """Final state of the findings the replay raised (all active, the newest resolved ones),
    in the order they opened."""
    book: FindingBook | None = None
    """Totals over every finding raised (`findings` may be a bounded part of them)."""
    transitions: int = 0
    recorded: FindingBook | None = None
    """The findings a replayed agent journal carried (to compare), kept the same way."""
    clock_notes: list[str] = field(default_factory=list)
    state: HostState | None = None
    first_ns: int | None = None
    last_ns: int | None = None
    end_ns: int | None = None
    """The moment the replay ended at (the last event, a listing's time, --until, or later)."""
    finding_inputs: dict[str, list[str]] = field(default_factory=dict)
    """Finding id -> the inputs whose events are about its device or sandbox."""
    options: Options = field(default_factory=Options)

    @property
    def unreadable(self) -> list[Input]:
        return [i for i in self.inputs if i.stats.error]

    @property
    def untimed_only(self) -> bool:
        """No input has times (pasted fragments, listings): every stamp is an ordinal."""
        return not any(i.parsed is not None and i.clock in ("realtime", "monotonic")
                       for i in self.inputs)

    @property
    def not_fully_read(self) -> list[Input]:
        """Inputs not read as a known artifact whole: unrecognised, read only as text
        (signatures only), cut short, or with malformed lines skipped (named at the top of the
        report; exit status 2)."""
        return [i for i in self.inputs if not i.stats.error and (
            i.stats.format in ("unrecognised", "text") or i.stats.truncated
            or i.stats.bad_lines)]

    @property
    def worst(self) -> ev.Severity | None:
        if self.book is not None:
            return self.book.worst
        return max((f.severity for f in self.findings), default=None)

    @property
    def recorded_findings(self) -> dict[str, ev.Finding]:
        return dict(self.recorded.items) if self.recorded is not None else {}

    @property
    def exit_status(self) -> int:
        """2 when an input could not be read whole, 1 when a finding reached warning, else 0."""
        if self.unreadable or self.not_fully_read:
            return 2
        worst = self.worst
        return 1 if worst is not None and worst >= ev.Severity.WARNING else 0

    @property
    def replay_matches_recording(self) -> bool | None:
        """None when no agent journal carried findings; else whether the replay agrees."""
        if self.recorded is None or not self.recorded.total:
            return None
        return self.book == self.recorded




class Filter:
    """Which events and findings the report shows (--device, --sandbox, --since)."""

    def __init__(self, options: Options) -> None:
        self.device = options.device.lower() if options.device else None
        self.sandbox = options.sandbox
        self.since = options.since_ns
        self.sandbox_bdfs: set[str] = set()
        self.include_ticks = options.include_ticks

    def learn(self, e: ev.Event) -> None:
        if self.sandbox is None:
            return
        if isinstance(e, ev.SandboxStarted) and self.is_mine(e.sandbox_id):
            self.sandbox_bdfs.update(v.bdf for v in e.vfs)
            self.sandbox_bdfs.update(e.vmm_vfio_devices)
        elif isinstance(e, ev.LogLineMatched) and self.is_mine(e.sandbox_id) and e.bdf:
            self.sandbox_bdfs.add(e.bdf)

    @property
    def open(self) -> bool:
        """No filter at all: everything but ticks is shown (the fast path of a big replay)."""
        return self.device is None and self.sandbox is None and self.since is None

    def shows(self, e: ev.Event) -> bool:
        if type(e) is ev.ClockTicked and not self.include_ticks:
            return False
        if self.since is not None and e.ts_ns < self.since and not isinstance(e, ev.Finding):
            return False
        bdf = _bdf_of(e)
        if self.device is not None and bdf != self.device:
            return False
        if self.sandbox is not None:
            sid = getattr(e, "sandbox_id", None)
            if not self.is_mine(sid) and (bdf is None or bdf not in self.sandbox_bdfs):
                return False
        return True

    def shows_finding(self, f: ev.Finding) -> bool:
        if self.since is not None and f.last_ns < self.since:
            return False
        if self.device is not None and (f.bdf or "").lower() != self.device:
            return False
        return not (self.sandbox is not None and not self.is_mine(f.sandbox_id)
                    and (f.bdf is None or f.bdf not in self.sandbox_bdfs))

    def is_mine(self, sandbox_id: object) -> bool:
        """The --sandbox id, whole or as the prefix the reports show (at least 6 characters)."""
        want = self.sandbox
        if want is None or not isinstance(sandbox_id, str):
            return False
        return sandbox_id == want or (len(want) >= 6 and sandbox_id.startswith(want))


def _bdf_of(e: ev.Event) -> str | None:
    bdf = getattr(e, "bdf", None)
    if bdf is None and isinstance(e, ev.SysfsWriteObserved):
        bdf = e.bdf
    return bdf.lower() if isinstance(bdf, str) else None

