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
        prev = self.items.get(f.finding_id)
        key = (f.rule, f.severity.label)
        if prev is None:
            self.total += 1
            self.by_rule[key] = self.by_rule.get(key, 0) + 1
        elif prev.severity != f.severity:
            # Counted under its severity now (a finding escalates while active, and an active
            # one is always kept, so its earlier record is here to move the count from).
            was = (prev.rule, prev.severity.label)
            self.by_rule[was] -= 1
            if not self.by_rule[was]:
                del self.by_rule[was]
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
    filter: Filter | None = None
    """The filter as the replay left it (the sandboxes and devices it learned), when one was
    asked for."""
    shown_book: FindingBook | None = None
    """Totals over the findings the filter shows (the exit status follows them)."""
    unmatched: str = ""
    """When a filter matches nothing in the inputs: what it asked and what the inputs hold."""

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
        """The worst severity of the findings shown (every one without a filter)."""
        if self.shown_book is not None:
            return self.shown_book.worst
        if self.book is not None:
            return self.book.worst
        return max((f.severity for f in self.findings), default=None)

    @property
    def recorded_findings(self) -> dict[str, ev.Finding]:
        return dict(self.recorded.items) if self.recorded is not None else {}

    @property
    def exit_status(self) -> int:
        """2 when an input could not be read whole or a filter matches nothing, 1 when a
        finding shown reached warning, else 0."""
        if self.unreadable or self.not_fully_read or self.unmatched:
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
    """Which events and findings the report shows (--device, --sandbox, --pod, --namespace,
    --since). A pod or namespace selects its sandboxes, learned from the inputs as they come
    (bundles, state files, crictl listings), and their devices."""

    def __init__(self, options: Options) -> None:
        self.device = options.device.lower() if options.device else None
        self.sandbox = options.sandbox
        self.pod = options.pod
        self.namespace = options.namespace
        self.since = options.since_ns
        self.sandbox_bdfs: set[str] = set()
        self.pod_sandboxes: set[str] = set()
        """Sandbox ids (or the 12-character prefixes crictl shows) of the --pod/--namespace."""
        self.pods_seen: set[tuple[str, str]] = set()
        """(namespace, pod) of every sandbox met, to say what there was when nothing matched."""
        self.include_ticks = options.include_ticks
        self.matched = False
        """Whether a finding about the pod or namespace asked for was raised."""

    @property
    def by_subject(self) -> bool:
        """A device, sandbox, pod or namespace was asked for."""
        return (self.device or self.sandbox or self.pod or self.namespace) is not None

    @property
    def by_sandbox(self) -> bool:
        return (self.sandbox or self.pod or self.namespace) is not None

    def pod_matches(self, namespace: str | None, pod: str | None) -> bool:
        if self.pod is None and self.namespace is None:
            return False
        return (self.pod is None or pod == self.pod) and (
            self.namespace is None or namespace == self.namespace)

    def learn_pods(self, pods: dict[str, tuple[str, str]]) -> None:
        """Sandbox id (or prefix) -> (namespace, pod) from a listing (crictl)."""
        for sid, (ns, pod) in pods.items():
            self.pods_seen.add((ns, pod))
            if self.pod_matches(ns, pod):
                self.pod_sandboxes.add(sid)

    def learn(self, e: ev.Event) -> None:
        if not self.by_sandbox:
            return
        if isinstance(e, ev.SandboxStarted):
            if e.pod:
                self.pods_seen.add((e.pod_namespace or "", e.pod))
            if self.pod_matches(e.pod_namespace, e.pod):
                self.pod_sandboxes.add(e.sandbox_id)
            if self.is_mine(e.sandbox_id):
                self.sandbox_bdfs.update(v.bdf for v in e.vfs)
                self.sandbox_bdfs.update(e.vmm_vfio_devices)
        elif isinstance(e, ev.LogLineMatched) and self.is_mine(e.sandbox_id) and e.bdf:
            self.sandbox_bdfs.add(e.bdf)

    @property
    def open(self) -> bool:
        """No filter at all: everything but ticks is shown (the fast path of a big replay)."""
        return not self.by_subject and self.since is None

    def shows(self, e: ev.Event) -> bool:
        if type(e) is ev.ClockTicked and not self.include_ticks:
            return False
        bdf = _bdf_of(e)
        if self.device is not None and bdf != self.device:
            return False
        if self.by_sandbox:
            sid = getattr(e, "sandbox_id", None)
            if not self.is_mine(sid) and (bdf is None or bdf not in self.sandbox_bdfs):
                return False
        return not (self.since is not None and e.ts_ns < self.since and not isinstance(e, ev.Finding))

    def about(self, f: ev.Finding) -> bool:
        """The finding is about the device, sandbox, pod or namespace asked for."""
        if self.device is not None and (f.bdf or "").lower() != self.device:
            return False
        if not self.by_sandbox:
            return True
        return (self.is_mine(f.sandbox_id) or self.pod_matches(f.pod_namespace, f.pod)
                or (f.bdf is not None and f.bdf in self.sandbox_bdfs))

    def shows_finding(self, f: ev.Finding) -> bool:
        if self.since is not None and f.last_ns < self.since:
            return False
        return self.about(f)

    def is_mine(self, sandbox_id: object) -> bool:
        """The --sandbox id, whole or as the prefix the reports show (at least 6 characters),
        or a sandbox of the --pod / --namespace."""
        if not isinstance(sandbox_id, str):
            return False
        want = self.sandbox
        if want is not None and (sandbox_id == want or (len(want) >= 6 and sandbox_id.startswith(want))):
            return True
        return any(sandbox_id == s or (min(len(s), len(sandbox_id)) >= 12 and (
            sandbox_id.startswith(s) or s.startswith(sandbox_id))) for s in self.pod_sandboxes)

    def asked(self) -> str:
        """The filter as the user gave it (`--device 0000:01:10.0 --pod web-0`)."""
        parts = [(n, v) for n, v in (("device", self.device), ("sandbox", self.sandbox),
                                     ("pod", self.pod), ("namespace", self.namespace)) if v]
        return " ".join(f"--{n} {v}" for n, v in parts)


def _bdf_of(e: ev.Event) -> str | None:
    bdf = getattr(e, "bdf", None)
    if bdf is None and isinstance(e, ev.SysfsWriteObserved):
        bdf = e.bdf
    return bdf.lower() if isinstance(bdf, str) else None

