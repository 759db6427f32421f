"""Provides the postmortem engine: inputs -> importers -> one aligned timeline -> the live Correlator.

Same engine, same answer: the events the importers produce go through the very `Correlator`
the live agent runs, in stamp order, and time advances only from their stamps. Replaying the
agent's own journal uses the `ClockTicked` records the live pipeline wrote whenever a timer tick
raised a finding, so its findings come out identical; for other inputs (which have no ticks)
time is advanced in `TICK_NS` steps across gaps so grace periods expire as they would have live.

Memory: the agent's journal is streamed (constant memory whatever its size); the other inputs
are small and read whole. The timeline kept for the report is bounded (`timeline_limit`): all
of it when it fits, else its start, every finding with its context, and its end.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from diag import codec
from diag import events as ev
from diag.core.config import CoreConfig
from diag.core.correlator import Correlator
from diag.core.state import HostState
from diag.importers import FileStats, Importer, Parsed, iter_lines, sniff, walk
from diag.importers import align as al

DEDUPE_MIN_NS = 50_000_000
DEDUPE_MAX_NS = 1_000_000_000
"""Copies of one happening in two inputs are merged within 2x the alignment uncertainty,
at least 50 ms and at most 1 s."""
TICK_NS = 1_000_000_000
"""Step of synthetic time advance across gaps (inputs other than the agent's journal)."""
MAX_TICKS_PER_GAP = 3600
"""Beyond this many steps in one gap the step grows (a day-long gap costs 3,600 advances)."""
BOOT_RELATIVE_NS = 10 * 365 * 86400 * 1_000_000_000
"""Stamps below this are read as time since boot (a monotonic input never aligned)."""


@dataclass(slots=True)
class Options:
    """What the user asked for."""

    device: str | None = None
    sandbox: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    """Path (or `*` for every input without wall-clock time) -> seconds-to-wall offset in ns."""
    timeline_limit: int = 2000
    config: CoreConfig | None = None
    include_ticks: bool = False
    keep_resolved: int = 1000
    """Resolved findings kept for the report (memory stays bounded); totals count them all."""


@dataclass(slots=True)
class Input:
    """One input file and how it was read and placed."""

    index: int
    path: str
    stats: FileStats
    importer: Importer | None = None
    parsed: Parsed | None = None
    events: list[ev.Event] | None = None
    """Materialised events (every input but the agent's journal)."""
    alignment: al.Alignment | None = None
    uncertainties: list[int] | None = None
    """Per-event uncertainty for untimed inputs placed by matching (-1: unknown)."""
    at: str | None = None
    """When a state listing was taken, as the user said it (`PATH@end`, `PATH@TIME`)."""
    at_ns: int | None = None

    @property
    def format(self) -> str:
        return self.stats.format

    @property
    def clock(self) -> str:
        return self.stats.clock


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


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def open_inputs(paths: Iterable[str], options: Options) -> list[Input]:
    """Sniff and parse every file (directories expanded); the agent's journals stay lazy."""
    from diag.importers import journal as jmod

    inputs: list[Input] = []
    seen: dict[str, str] = {}
    at_of: dict[str, str] = {}
    named: list[str] = []
    for item in paths:
        base, sep, when = item.rpartition("@")
        if sep and not os.path.exists(item) and os.path.exists(base):
            at_of[base] = when  # `lspci-after.txt@end`: when the listing was taken
            item = base
        named.append(item)
    for path in walk(named):
        st = FileStats(path)
        real = os.path.realpath(path)
        if real in seen:  # a symlink (configuration.toml -> configuration-qemu.toml) or repeat
            st.format = "duplicate"
            st.note(f"the same file as {seen[real]}: read once")
            inputs.append(Input(index=len(inputs), path=path, stats=st))
            continue
        seen[real] = path
        if os.path.exists(path) and not os.path.isfile(path):
            # A FIFO, socket or device: reading it twice (sniff, then parse) would block or
            # lose data.
            st.format, st.error = "unreadable", "not a regular file"
            inputs.append(Input(index=len(inputs), path=path, stats=st))
            continue
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            st.format = "empty"
            st.note("empty: nothing was captured")
            inputs.append(Input(index=len(inputs), path=path, stats=st))
            continue
        imp, err = sniff(path)
        inp = Input(index=len(inputs), path=path, stats=st, importer=imp, at=at_of.get(path))
        inputs.append(inp)
        if err:
            st.format, st.error = "unreadable", err
            continue
        if imp is None:
            st.format = "unrecognised"
            continue
        st.format = imp.name
    _order_journal_parts(inputs)
    _kata_pass(inputs)
    for inp in inputs:
        if inp.importer is None or inp.parsed is not None:
            continue
        st = inp.stats
        if inp.format == "journal":
            inp.parsed = jmod.parse_file(inp.path, st, skip_restatement=inp.stats.notes.count(_CONTINUES) > 0)
            st.clock = "realtime"
            continue
        parsed = inp.importer.parse(iter_lines(inp.path, st), st, inp.path)
        events = list(parsed.events)
        if parsed.untimed and len(parsed.untimed) == len(events) and any(parsed.untimed):
            pairs = sorted(zip(events, parsed.untimed, strict=True), key=lambda p: p[0].ts_ns)
            events = [e for e, _ in pairs]
            inp.uncertainties = [-1 if u else 0 for _, u in pairs]
        else:
            events.sort(key=lambda e: e.ts_ns)  # stable; linear when already in order
        inp.parsed, inp.events = parsed, events
        st.clock = parsed.clock if inp.format != "ipmon" else st.clock
    return inputs


_CONTINUES = "continues an earlier part given here: its restated state was skipped"


# A Kata configuration or state file is a few KiB; more than this is not one, and is not
# held whole in memory (the lines past it are left, and the input says so).
MAX_WHOLE_FILE = 16 * 1024 * 1024


def _read_text(inp: Input) -> str:
    parts: list[bytes] = []
    size = 0
    for line in iter_lines(inp.path, inp.stats):
        if size + len(line) > MAX_WHOLE_FILE:
            inp.stats.truncated = True
            inp.stats.note(f"read only its first {MAX_WHOLE_FILE // (1024 * 1024)} MiB "
                           "(larger than any configuration or state file)")
            break
        parts.append(line)
        size += len(line)
    data = b"".join(parts)
    inp.stats.lines = data.count(b"\n")
    return data.decode("utf-8", "replace")


def _config_text(inp: Input) -> str:
    """A configuration file's text; a pasted fragment made loadable (and said so)."""
    from diag.importers import kataconfig

    text, notes = kataconfig.fragment_text(_read_text(inp))
    for n in notes:
        inp.stats.note(n)
    return text


def _kata_pass(inputs: list[Input]) -> None:
    """Kata configuration files merged per main file + config.d; state files read with them."""
    from diag.importers import kataconfig, katastate
    from diag.sources.kata import sandboxes

    confs = {i.path: i for i in inputs if i.format == "kataconfig"}
    configs: list[ev.KataConfig] = []
    for main, drops in kataconfig.group_configs(list(confs)):
        texts = {p: _config_text(confs[p]) for p in ([main] if main else []) + drops}
        events = kataconfig.parse_group((main, texts[main]) if main else None,
                                        [(d, texts[d]) for d in drops])
        owner = confs[main] if main else confs[drops[0]]
        owner.events = events
        owner.stats.events = len(events)
        for d in drops:
            if confs[d] is not owner:
                confs[d].events = []
                confs[d].stats.note(f"drop-in merged into {main or drops[0]}")
        configs.extend(e.config for e in events if isinstance(e, ev.KataConfigLoaded))
    for i in confs.values():
        i.parsed = Parsed(events=i.events or [], clock="static")
        i.stats.clock = "static"
    names = [c.handler for c in configs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        paths = [c.path for c in configs if c.handler == name]
        for i in confs.values():
            if i.path in paths:
                i.stats.note(f"{len(paths)} configurations for handler {name} were given; the "
                             f"last one read ({paths[-1]}) is the one replayed")
    cfg = configs[0] if len(configs) == 1 else None
    texts = {i.path: _read_text(i) for i in inputs if i.format == "katastate"}
    bundles: dict[str, tuple[Input, sandboxes.BundleInfo]] = {}
    for i in inputs:
        if i.format == "katastate" and katastate.is_bundle(texts[i.path]):
            b = katastate.parse_bundle(texts[i.path], i.path, i.stats)
            # Only the sandbox (pause) task's bundle describes the sandbox; a container's is noted.
            if b is not None and b.container_type in ("sandbox", ""):
                bundles[b.sandbox_id or os.path.basename(os.path.dirname(i.path))] = (i, b)
            elif b is not None:
                i.stats.note("a container's bundle: the sandbox's own bundle carries the pod")
            i.events, i.parsed, i.stats.clock = [], Parsed(events=[], clock="static"), "static"
    used: set[str] = set()
    for i in inputs:
        if i.format != "katastate" or katastate.is_bundle(texts[i.path]):
            continue
        sid = katastate.sandbox_id(i.path, texts[i.path])
        pair = bundles.get(sid)
        if pair is not None:
            used.add(sid)
            pair[0].stats.note(f"read with {i.path}")
        events = katastate.parse_state(texts[i.path], i.path, cfg, i.stats,
                                       pair[1] if pair else None)
        _set_static(i, events)
    for sid, (i, b) in bundles.items():
        if sid not in used:
            _set_static(i, katastate.parse_state(None, i.path, cfg, i.stats, b))
    for i in inputs:
        if i.format != "katastate":
            continue
        if len(configs) > 1:
            i.stats.note(f"{len(configs)} Kata configurations given: which one this sandbox used "
                         "is unknown; Kata's defaults assumed")


def _set_static(i: Input, events: list[ev.Event]) -> None:
    i.events = events
    i.stats.events = len(events)
    i.parsed = Parsed(events=events, clock="static")
    i.stats.clock = "static"


def _order_journal_parts(inputs: list[Input]) -> None:
    """Mark rotated journal parts that follow an earlier part of the same run among the inputs."""
    from diag.importers import journal as jmod

    runs: dict[tuple[str, int], list[tuple[int, Input]]] = {}
    for inp in inputs:
        if inp.format != "journal":
            continue
        h = jmod.first_header(inp.path)
        if h is None:
            continue
        who = ", ".join(x for x in (
            f"host {h.hostname}" if h.hostname else "", f"kernel {h.kernel}" if h.kernel else "",
            f"vfiowatch {h.agent_version}" if h.agent_version else "",
            f"boot {h.boot_id[:8]}" if h.boot_id else "", f"part {h.part}") if x)
        inp.stats.note(f"written by the agent: {who}")
        runs.setdefault((h.boot_id, h.started_ns), []).append((h.part, inp))
    for parts in runs.values():
        parts.sort(key=lambda x: x[0])
        for _, inp in parts[1:]:
            inp.stats.note(_CONTINUES)


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------


def _journal_boot(inputs: list[Input]) -> str:
    """The boot id in the header of the agent's journal among the inputs (first one)."""
    from diag.importers import journal as jmod

    for i in inputs:
        if i.format == "journal":
            h = jmod.first_header(i.path)
            if h is not None and h.boot_id:
                return h.boot_id
    return ""


def _journal_keyed(inp: Input, limit: int = 20000) -> list[tuple[int, al.Key, int]]:
    """Keyed events of an agent journal (a second, bounded pass over its head)."""
    from itertools import islice

    from diag.importers import journal as jmod

    events = jmod.parse_file(inp.path, FileStats(inp.path)).events
    return al.anchor_keys(islice(events, limit * 10))[:limit]


def align_inputs(inputs: list[Input], options: Options) -> list[str]:
    """Give every monotonic and untimed input an offset (or say it has none); notes for the report."""
    notes: list[str] = []
    offsets = {k if k == "*" else os.path.realpath(k): v for k, v in options.offsets.items()}
    anchors = [a for i in inputs if i.parsed is not None for a in i.parsed.anchors]
    real_keyed: list[tuple[int, al.Key, int]] | None = None

    def reference() -> list[tuple[int, al.Key, int]]:
        nonlocal real_keyed
        if real_keyed is None:
            real_keyed = []
            for i in inputs:
                if i.clock != "realtime" or i.parsed is None:
                    continue
                if i.events is not None:
                    real_keyed.extend(al.anchor_keys(i.events))
                else:
                    real_keyed.extend(_journal_keyed(i))
        return real_keyed

    has_wall = any(i.parsed is not None and i.clock == "realtime" for i in inputs)
    monos = [i for i in inputs if i.parsed is not None and i.clock == "monotonic"]
    for inp in monos:
        explicit = offsets.get(os.path.realpath(inp.path), offsets.get("*"))
        if explicit is not None:
            inp.alignment = al.Alignment(explicit, 0, "explicit --offset")
        elif not has_wall and not anchors:
            inp.alignment = al.Alignment(0, 0, (
                "kept on its own clock (no wall-clock input): times are since boot"
                + ("; the monotonic inputs are assumed to come from one boot" if len(monos) > 1
                   else "")))
        else:
            a, why = al.from_anchors(anchors, _journal_boot(inputs))
            if a is None:
                a = al.match_offset(al.anchor_keys(inp.events or ()), reference())
                if a is None and why:
                    why = f"{why}; no events matched the timed inputs"
            inp.alignment = a or al.Alignment(
                0, None, "NOT aligned: " + (why or "nothing to align with")
                + "; stamps are time since boot, order against other inputs unknown"
                + " (give --offset)",
            )
        if inp.alignment.offset_ns and inp.events is not None:
            off = inp.alignment.offset_ns
            inp.events = [replace(e, ts_ns=e.ts_ns + off) for e in inp.events]
    # Untimed inputs go last: they can lean on the monotonic ones just aligned.
    for inp in inputs:
        if inp.parsed is None or inp.clock != "none" or inp.events is None:
            continue
        explicit = offsets.get(os.path.realpath(inp.path))
        ref = list(reference())
        for other in inputs:
            if other is not inp and other.clock == "monotonic" and other.alignment and \
                    other.alignment.uncertainty_ns is not None and other.events is not None:
                ref.extend(al.anchor_keys(other.events))
        stamps, uncs, matched = al.place_untimed(al.anchor_keys(inp.events), ref, len(inp.events))
        if matched:
            inp.events = [replace(e, ts_ns=t) for e, t in zip(inp.events, stamps, strict=True)]
            inp.uncertainties = uncs
            inp.alignment = al.Alignment(0, max((u for u in uncs if u >= 0), default=0),
                                         f"no timestamps: placed by {matched} messages matched "
                                         "with timed inputs, the others between them", matched)
        else:
            inp.alignment = al.Alignment(0, None, "no timestamps and nothing to match: only the "
                                         "order within the file is known")
        if explicit is not None:
            notes.append(f"{inp.path}: --offset ignored (the file has no timestamps)")
    for inp in inputs:
        if inp.alignment is None:
            continue
        a = inp.alignment
        if a.uncertainty_ns is None or a.offset_ns == 0:
            notes.append(f"{inp.path}: {a.method}")
        elif inp.clock == "monotonic":
            notes.append(f"{inp.path}: monotonic clock {a.method}; offset {a.offset_ns / 1e9:.6f} s"
                         f" (±{a.uncertainty_ns / 1e6:.1f} ms)")
        else:
            notes.append(f"{inp.path}: {a.method} (±{a.uncertainty_ns / 1e6:.1f} ms at worst)")
    for inp in inputs:
        if inp.format == "ipmon" and inp.clock == "realtime":
            notes.append(f"{inp.path}: ip monitor stamps are the capturing host's local time, read "
                         "as UTC (use --offset PATH=SECONDS if it was not UTC)")
    return notes


# --------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------

Item = tuple[int, int, int, ev.Event]
"""(stamp, input index, sequence, event): heap-mergeable without comparing events."""


def _identity_only(e: ev.InventoryObserved) -> ev.InventoryObserved:
    """An untimed listing's devices without their drivers: who they are, not what they did."""
    return replace(e, devices=tuple(
        replace(d, driver=None, driver_override=None, vfio_group_path=None) for d in e.devices))


def _stream(inp: Input, base_ns: int | None) -> Iterator[Item]:
    idx = inp.index
    if inp.events is not None:
        static = inp.clock == "static"
        for n, e in enumerate(inp.events):
            if static and inp.at_ns is not None:
                # Taken when the user said: who the devices are is known from the start, the
                # drivers it shows are the state at that moment.
                if isinstance(e, ev.InventoryObserved) and base_ns is not None \
                        and base_ns <= inp.at_ns:
                    yield (base_ns - 1, idx, -1 - n, replace(_identity_only(e), ts_ns=base_ns - 1))
                e = replace(e, ts_ns=inp.at_ns)
            elif static:
                ts = (base_ns - 1) if base_ns is not None else 0
                if base_ns is not None and isinstance(e, ev.InventoryObserved):
                    # When it was listed is unknown; its drivers would claim the state at the
                    # start (and hide a rebind as "already on vfio-pci at start").
                    e = _identity_only(e)
                e = replace(e, ts_ns=ts)
            yield (e.ts_ns, idx, n, e)
        return
    assert inp.parsed is not None
    for n, e in enumerate(inp.parsed.events):
        yield (e.ts_ns, idx, n, e)


class _Filter:
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


class _LinkEnricher:
    """Fills the PCI address of imported link events (ip monitor knows none) from netdev events."""

    def __init__(self) -> None:
        self.by_name: dict[str, str] = {}

    def __call__(self, e: ev.Event) -> ev.Event:
        t = type(e)
        if t is ev.NetdevAdded:
            assert isinstance(e, ev.NetdevAdded)
            if e.bdf:
                self.by_name[e.ifname] = e.bdf
        elif (t is ev.LinkChanged or t is ev.LinkRemoved) and e.source == "links":
            assert isinstance(e, (ev.LinkChanged, ev.LinkRemoved))
            if e.bdf is None and e.netns.is_host and e.netns.inode == 0:
                bdf = self.by_name.get(e.ifname)
                if bdf:
                    return replace(e, bdf=bdf)
        return e


def _identity(e: ev.Event) -> tuple[object, ...] | None:
    """What two inputs' copies of one happening share (None: never merged)."""
    t = type(e)
    if t is ev.DeviceBound or t is ev.DeviceUnbound or t is ev.DeviceAdded or \
            t is ev.DeviceRemoved or t is ev.DeviceChanged:
        return (t, e.bdf)  # type: ignore[attr-defined]
    if t is ev.NetdevAdded or t is ev.NetdevRemoved:
        return (t, e.bdf, e.ifname)  # type: ignore[attr-defined]
    if t is ev.VfioDeviceAdded or t is ev.VfioDeviceRemoved:
        return (t, e.bdf, e.group)  # type: ignore[attr-defined]
    if t is ev.LinkChanged:
        assert isinstance(e, ev.LinkChanged)
        return (t, e.netns.inode, e.ifindex, e.ifname, e.operstate, e.carrier, e.admin_up, e.mac)
    if t is ev.LinkRemoved:
        assert isinstance(e, ev.LinkRemoved)
        return (t, e.netns.inode, e.ifindex, e.ifname)
    if t is ev.LogLineMatched:
        assert isinstance(e, ev.LogLineMatched)
        return (t, e.signature, e.text, e.sandbox_id)
    if t is ev.DriverRegistered or t is ev.DriverUnregistered:
        return (t, e.driver)  # type: ignore[attr-defined]
    if t is ev.SysfsWriteObserved:
        assert isinstance(e, ev.SysfsWriteObserved)
        if e.mode == KATA_LOG:  # one Kata line read from two places (kata syslog, containerd)
            return (t, e.bdf, e.control, e.value, e.actor.pid)
    return None


_UNCOMPARED = frozenset(("kind", "ts_ns", "source", "previous_driver", "origin", "pid", "level"))


def _compatible(a: dict[str, object], b: dict[str, object]) -> bool:
    """No field both copies know differs (a driver name one of them lacks is fine)."""
    for k in a.keys() & b.keys():
        if k in _UNCOMPARED:
            continue
        va, vb = a[k], b[k]
        if va in ("", None) or vb in ("", None):
            continue
        if va != vb:
            return False
    return True


def _same_line_elsewhere(a: ev.Event, b: ev.Event) -> bool:
    """One log line read from two places of one input (Kata's syslog and containerd's unit)."""
    if isinstance(a, ev.SysfsWriteObserved) and isinstance(b, ev.SysfsWriteObserved):
        return a.mode == KATA_LOG and b.mode == KATA_LOG and a.ts_ns == b.ts_ns
    return isinstance(a, ev.LogLineMatched) and isinstance(b, ev.LogLineMatched) and \
        a.origin != b.origin


def _known(rec: dict[str, object]) -> int:
    return sum(1 for v in rec.values() if v not in ("", None))


class _Dedupe:
    """Merges the copies of one happening that several inputs saw (two udevadm captures of one
    session, the agent's journal and udevadm, a journald export and containerd's log).

    Events wait up to `window_ns`; a copy from another input with the same identity, no
    conflicting field and a stamp within the pair's window (twice their alignment uncertainty,
    at least 50 ms, at most 1 s) is dropped, and when it says more (a driver name, an ifindex)
    it replaces the waiting one. Copies within one input are merged only for a log line read
    from two origins (Kata's `kata` syslog lines repeated in containerd's unit).
    """

    def __init__(self, uncertainty: dict[int, int]) -> None:
        self.unc = uncertainty
        self.window = DEDUPE_MAX_NS if not uncertainty else min(
            DEDUPE_MAX_NS, max(DEDUPE_MIN_NS, 4 * max(uncertainty.values())))
        self.pending: deque[list[Any]] = deque()  # [ts, idx, n, event, identity, record]
        self.by_ident: dict[tuple[object, ...], deque[list[Any]]] = {}
        """The waiting events by identity, so a new one is compared with its like only (a
        dense journal beside an imprecisely aligned capture holds thousands in the window)."""
        self.dropped = 0

    def _pair_window(self, a: int, b: int) -> int:
        w = 2 * (self.unc.get(a, 0) + self.unc.get(b, 0))
        return min(DEDUPE_MAX_NS, max(DEDUPE_MIN_NS, w))

    def _release(self, out: list[Item], until: int | None) -> None:
        pend = self.pending
        while pend and (until is None or pend[0][0] < until):
            p = pend.popleft()
            if p[4] is not None:
                same = self.by_ident[p[4]]
                same.popleft()  # the oldest of its identity: they wait in stamp order
                if not same:
                    del self.by_ident[p[4]]
            out.append((p[0], p[1], p[2], p[3]))

    def push(self, item: Item) -> list[Item]:
        ts, idx, n, e = item
        out: list[Item] = []
        self._release(out, ts - self.window)
        ident = _identity(e)
        if ident is not None:
            rec: dict[str, object] | None = None
            for p in self.by_ident.get(ident, ()):
                if ts - p[0] > self._pair_window(p[1], idx):
                    continue
                if p[1] == idx and not _same_line_elsewhere(p[3], e):
                    continue
                if rec is None:
                    rec = codec.to_record(e)
                if p[5] is None:
                    p[5] = codec.to_record(p[3])
                if not _compatible(p[5], rec):
                    continue
                self.dropped += 1
                if _known(rec) > _known(p[5]):
                    p[3], p[5] = replace(e, ts_ns=p[0]), rec
                return out
        entry = [ts, idx, n, e, ident, None]
        self.pending.append(entry)
        if ident is not None:
            self.by_ident.setdefault(ident, deque()).append(entry)
        return out

    def flush(self) -> list[Item]:
        out: list[Item] = []
        self._release(out, None)
        return out


def _deduped(items: Iterator[Item], dd: _Dedupe) -> Iterator[Item]:
    for item in items:
        yield from dd.push(item)
    yield from dd.flush()


CONTEXT = 20
"""Entries kept before and after each finding once the timeline is too long to keep whole
(fewer for a small --limit: a sixteenth of it)."""


class _Keeper:
    """The bounded timeline: every entry while they fit in `limit`; past that, the first
    quarter, each finding with CONTEXT entries either side (up to half), and the last quarter.

    Entries are kept as the merge's cheap tuples with their sequence number and become `Entry`
    objects only at the end, so a million-event replay pays a deque append per event.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seq = 0
        self.items: list[tuple[int, Item]] = []
        self.fits = True
        quarter = max(1, limit // 4)
        self.head_n = quarter
        self.tail: deque[tuple[int, Item]] = deque(maxlen=quarter)
        self.context = min(CONTEXT, max(1, limit // 16))
        self.pre: deque[tuple[int, Item]] = deque(maxlen=self.context)
        self.kept: list[tuple[int, Item]] = []
        self.kept_cap = max(0, limit - 2 * quarter)
        self.after = 0

    def add(self, item: Item) -> None:
        self.seq += 1
        rec = (self.seq, item)
        if self.fits:
            self.items.append(rec)
            if len(self.items) > self.limit:
                self.fits = False
                rest = self.items[self.head_n:]
                self.items = self.items[: self.head_n]
                for r in rest:
                    self._stream(r)
            return
        self._stream(rec)

    def _stream(self, rec: tuple[int, Item]) -> None:
        self.tail.append(rec)
        room = self.kept_cap - len(self.kept)
        if rec[1][1] < 0 and room > 0:  # a finding opened or resolved
            before = list(self.pre)[-(room - 1):] if room > 1 else []
            self.kept.extend(before)
            self.pre.clear()
            self.kept.append(rec)
            self.after = self.context
        elif self.after and room > 0:
            self.kept.append(rec)
            self.after -= 1
        else:
            self.pre.append(rec)

    def result(self) -> list[tuple[int, Item]]:
        if self.fits:
            return self.items
        merged = dict(self.items)
        merged.update(self.kept)
        merged.update(self.tail)
        return sorted(merged.items())


def replay(
    inputs: list[Input], options: Options,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Feed every input's events, merged by stamp, through a fresh Correlator."""
    report = Report(inputs=inputs, timeline=[], options=options)
    report.clock_notes = align_inputs(inputs, options)
    has_journal = any(i.format == "journal" and i.parsed is not None for i in inputs)
    timed_streams = []
    first_stamps = []
    for inp in inputs:
        if inp.parsed is None or inp.clock == "static":
            continue
        if inp.events is not None:
            if inp.events:
                first_stamps.append(inp.events[0].ts_ns)
            timed_streams.append(_stream(inp, None))
        else:
            it = _stream(inp, None)
            head = next(it, None)
            if head is not None:
                first_stamps.append(head[0])
                timed_streams.append(_chain(head, it))
    base = min(first_stamps) if first_stamps else None
    last_stamps = [i.events[-1].ts_ns for i in inputs if i.parsed is not None
                   and i.clock != "static" and i.events]
    for i in inputs:
        if i.at == "end" and i.clock == "static":
            i.at_ns = (max(last_stamps) + 1) if last_stamps else None
        if i.at_ns is not None:
            report.clock_notes.append(
                f"{i.path}: taken {'at the end of the other inputs' if i.at == 'end' else 'at ' + i.at if i.at else 'then'}"
                " (as given): its drivers are the state at that moment")
    static = [_stream(i, base) for i in inputs
              if i.parsed is not None and i.clock == "static" and i.events]
    streams = [*static, *timed_streams]
    merged: Iterator[Item] = streams[0] if len(streams) == 1 else heapq.merge(*streams)
    dedupe: _Dedupe | None = None
    if any(i.parsed is not None and i.format != "journal" for i in inputs):
        dedupe = _Dedupe({i.index: i.alignment.uncertainty_ns for i in inputs
                          if i.alignment is not None and i.alignment.uncertainty_ns is not None})
        merged = _deduped(merged, dedupe)

    kernel = _KernelFromKata(inputs)
    if kernel.active:
        merged = kernel.transform(merged)
    corr = Correlator(options.config)
    filt = _Filter(options)
    seen_by: dict[str, set[int]] = {}
    """Device or sandbox -> the inputs whose events are about it (what a finding rests on)."""
    enrich = _LinkEnricher() if any(i.format == "ipmon" for i in inputs) else None
    unc_of = {i.index: (i.alignment.uncertainty_ns if i.alignment and i.alignment.uncertainty_ns
                        is not None else (-1 if i.alignment else 0)) for i in inputs}
    per_event_unc = {i.index: i.uncertainties for i in inputs if i.uncertainties}
    static_idx = {i.index for i in inputs if i.clock == "static"}
    keep = options.keep_resolved
    findings = FindingBook(keep)
    recorded = FindingBook(keep)
    keeper = _Keeper(options.timeline_limit) if options.timeline_limit > 0 else None
    last_ts: int | None = None
    until = options.until_ns
    total = 0

    def note(transitions: list[ev.Finding]) -> None:
        nonlocal total
        for f in transitions:
            report.transitions += 1
            findings.add(f)
            if f.status != "updated" and filt.shows_finding(f):
                total += 1
                if keeper is not None:
                    keeper.add((f.ts_ns, -1, 0, f))

    def advance_to(ts: int) -> None:
        assert last_ts is not None
        gap = ts - last_ts
        step = TICK_NS if gap <= TICK_NS * MAX_TICKS_PER_GAP else gap // MAX_TICKS_PER_GAP
        t = (last_ts // step + 1) * step
        while t < ts:
            note(corr.advance(t))
            t += step

    count = 0
    unfiltered = filt.open
    sandbox_filter = filt.sandbox is not None
    for ts, idx, n, e in merged:
        if until is not None and ts > until:
            break
        count += 1
        if progress is not None and not count & 0x3FFF:
            progress(count)
        if type(e) is ev.Finding:
            assert isinstance(e, ev.Finding)
            recorded.add(e)
            continue
        if enrich is not None:
            e = enrich(e)
        if not has_journal and last_ts is not None and ts - last_ts > TICK_NS:
            advance_to(ts)
        if report.first_ns is None and idx not in static_idx:
            report.first_ns = ts
        last_ts = ts
        if sandbox_filter:
            filt.learn(e)
        if idx >= 0:
            for key in _subjects(e):
                seen_by.setdefault(key, set()).add(idx)
        transitions = corr.feed(e)
        if (type(e) is not ev.ClockTicked or options.include_ticks) if unfiltered else filt.shows(e):
            total += 1
            if keeper is not None:
                keeper.add((ts, idx, n, e))
        if transitions:
            note(transitions)
    if until is not None and last_ts is not None and until > last_ts and not has_journal:
        advance_to(until)
        note(corr.advance(until))
        report.clock_notes.append(f"conditions judged at --until ({until} ns): time let run on "
                                  "to it")
    elif until is None and last_ts is not None and not has_journal:
        later = _end_is_later(inputs, corr.snapshot())
        if later:
            cfg = corr.config
            end = last_ts + max(cfg.stranded_grace_ns, cfg.stuck_grace_ns,
                                cfg.netdev_grace_ns) + TICK_NS
            advance_to(end)
            note(corr.advance(end))
            report.clock_notes.append(later + "; conditions with a grace period (stranded, "
                                      "stuck, netdev lost) are judged there as lasting past it")
    report.end_ns = corr.model.now_ns
    report.last_ns = last_ts if report.first_ns is not None else None
    if base is not None:
        report.clock_notes.extend(_listing_notes(inputs, report.state))
    if dedupe is not None and dedupe.dropped:
        report.clock_notes.append(
            f"{dedupe.dropped} event(s) seen twice (by two inputs, or one log line in two "
            "places) were merged into one: same happening, no conflicting field, stamps within "
            "twice the clocks' uncertainty (at least 50 ms)")
    report.events_total = count
    report.timeline_total = total
    report.findings = list(findings.items.values())
    report.book = findings
    names = {i.index: i.path for i in inputs}
    for f in report.findings:
        idxs: set[int] = set()
        for key in (f.bdf, f.sandbox_id):
            if key:
                idxs |= seen_by.get(key, set())
        report.finding_inputs[f.finding_id] = sorted(names[i] for i in idxs)
    report.recorded = recorded
    report.state = corr.snapshot()
    timeline = report.timeline
    for seq, (ts, idx, n, e) in keeper.result() if keeper is not None else ():
        u = unc_of.get(idx, 0) if idx >= 0 else 0
        pu = per_event_unc.get(idx)
        if pu is not None and n < len(pu):
            u = pu[n]
        timeline.append(Entry(ts, idx, e, u or 0, static=idx in static_idx, seq=seq))
    _mark_order(timeline)
    for inp in inputs:
        if inp.format == "journal" and inp.stats.error:
            report.clock_notes.append(f"{inp.path}: {inp.stats.error}")
    return report


def _listing_notes(inputs: list[Input], state: HostState | None) -> list[str]:
    """Compare untimed listings' drivers with the replay's end (they were taken some time)."""
    notes: list[str] = []
    end = {d.device.bdf: d.driver for d in (state.devices if state else ())}
    for inp in inputs:
        for e in inp.events or ():
            if inp.clock != "static" or not isinstance(e, ev.InventoryObserved):
                continue
            notes.append(f"{inp.path}: a listing with no time: its devices' identities (ids, "
                         "PF/VF, IOMMU groups) are used from the start, its drivers are not")
            differ = [f"{d.bdf} {d.driver or '(none)'} (replay ends with {end[d.bdf] or '(none)'})"
                      for d in e.devices if d.bdf in end and end[d.bdf] != d.driver]
            if differ:
                notes.append(f"{inp.path}: drivers differ from the end of the replay, so it was "
                             "not taken at the end: " + "; ".join(differ[:8])
                             + (f"; … {len(differ) - 8} more" if len(differ) > 8 else ""))
    return notes


def _chain(head: Item, rest: Iterator[Item]) -> Iterator[Item]:
    yield head
    yield from rest


def _mark_order(timeline: list[Entry]) -> None:
    """Flag neighbours from different inputs closer than their combined uncertainty."""
    for i in range(1, len(timeline)):
        a, b = timeline[i - 1], timeline[i]
        if a.input == b.input or a.input < 0 or b.input < 0 or a.static or b.static \
                or b.seq != a.seq + 1:
            continue
        if a.uncertainty_ns < 0 or b.uncertainty_ns < 0:
            unsure = True
        else:
            unsure = b.ts_ns - a.ts_ns <= max(a.uncertainty_ns, b.uncertainty_ns) and \
                max(a.uncertainty_ns, b.uncertainty_ns) > 0
        if unsure:
            timeline[i - 1] = replace(a, order_uncertain=True)
            timeline[i] = replace(b, order_uncertain=True)


def _subjects(e: ev.Event) -> tuple[str, ...]:
    """The device and sandbox an event is about (for what a finding rests on)."""
    out = []
    bdf = getattr(e, "bdf", None)
    if isinstance(bdf, str):
        out.append(bdf)
    sid = getattr(e, "sandbox_id", None)
    if isinstance(e, ev.SysfsWriteObserved):
        sid = e.actor.sandbox_id
    if isinstance(sid, str):
        out.append(sid)
    if isinstance(e, ev.SandboxStarted):
        out.extend(e.vmm_vfio_devices)
    if isinstance(e, ev.InventoryObserved):
        out.extend(d.bdf for d in e.devices)
    return tuple(out)


def _end_is_later(inputs: list[Input], state: HostState) -> str:
    """Why the end of the inputs is later than their last event ('' when it is not known to be):
    an untimed listing whose drivers agree with the end of the events was taken after them; an
    incident known only from lines without time was pasted after it."""
    # Only the devices the events moved: the others' drivers are unknown to the replay.
    end = {d.device.bdf: d.driver for d in state.devices if d.since_ns is not None}
    for inp in inputs:
        if inp.clock != "static" or inp.at_ns is not None or inp.events is None:
            continue
        for e in inp.events:
            if not isinstance(e, ev.InventoryObserved):
                continue
            listed = {d.bdf: d.driver for d in e.devices if d.bdf in end}
            if listed and all(end[b] == drv for b, drv in listed.items()):
                return (f"the end of the inputs: {inp.path} (no time) agrees with the last "
                        "events, so it was taken after them (assumed)")
    timed = [i for i in inputs if i.parsed is not None and i.clock not in ("static", "none")
             and i.events]
    untimed = [i for i in inputs if i.parsed is not None and i.clock == "none" and i.events]
    if untimed and not timed:
        return ("the end of the inputs: no line has a time; they were pasted after the "
                "incident, at a moment they do not say (assumed later)")
    return ""


KATA_LOG = "kata-log"
"""Source of the kernel facts inferred from Kata's own lines where no kernel capture speaks."""
COVER_NS = 2_000_000_000
"""A kernel capture is taken to cover this much before its first and after its last event."""


class _KernelFromKata:
    """The kernel's side of a move, from Kata's own lines, where no kernel capture covers it.

    Kata announces each write (override, unbind, drivers_probe, bind); the kernel's answer is
    what the write asks for. Where a udevadm capture or the agent's journal covers that time
    they are the witness and nothing is inferred; elsewhere each write gives the unbind or bind
    it makes (source `kata-log`, after the write), and a QEMU line about a VF Kata cold-plugged
    (`Bus '<unknown PCIePortBusPrefix: >0' not found`, `port is not set`) gives the bind to
    vfio-pci that must have come before it.
    """

    IMPLY_VFIO = ("qemu-bus-not-found", "port-not-set")

    def __init__(self, inputs: list[Input]) -> None:
        self.ranges: list[tuple[int, int]] = []
        kernel = (ev.DeviceBound, ev.DeviceUnbound, ev.DeviceAdded, ev.DeviceRemoved)
        for i in inputs:
            if i.format == "journal":
                self.ranges.append((-(1 << 62), 1 << 62))
            elif i.events and any(isinstance(e, kernel) for e in i.events):
                self.ranges.append((i.events[0].ts_ns - COVER_NS, i.events[-1].ts_ns + COVER_NS))
        self.active = any(i.format in ("journalctl", "journald", "journal-export", "logfmt",
                                       "text", "kubectl-describe", "klog", "kata-collect-data")
                          for i in inputs)
        self.override: dict[str, str] = {}
        self.driver: dict[str, str | None] = {}

    def covered(self, ts: int) -> bool:
        return any(a <= ts <= b for a, b in self.ranges)

    def transform(self, items: Iterator[Item]) -> Iterator[Item]:
        for item in items:
            yield item
            _, idx, n, e = item
            for d in self.derive(e):
                yield (d.ts_ns, idx, n, d)

    def derive(self, e: ev.Event) -> list[ev.Event]:
        if isinstance(e, ev.DeviceBound):
            self.driver[e.bdf] = e.driver
            return []
        if isinstance(e, ev.DeviceUnbound):
            self.driver[e.bdf] = None
            return []
        if isinstance(e, ev.LogLineMatched):
            if (e.signature in self.IMPLY_VFIO and e.bdf and not self.covered(e.ts_ns)
                    and self.driver.get(e.bdf) != "vfio-pci"
                    and (e.signature != "qemu-bus-not-found" or "PCIePortBusPrefix" in e.text)):
                self.driver[e.bdf] = "vfio-pci"
                return [ev.DeviceBound(ts_ns=max(0, e.ts_ns - 1), source=KATA_LOG, bdf=e.bdf,
                                       driver="vfio-pci")]
            return []
        if not isinstance(e, ev.SysfsWriteObserved) or e.mode != KATA_LOG or e.bdf is None \
                or self.covered(e.ts_ns):
            return []
        bdf, t = e.bdf, e.ts_ns + 1000
        if e.control == "driver_override":
            self.override[bdf] = e.value.strip()
            return []
        if e.control == "unbind":
            prev = self.driver.get(bdf)
            if bdf in self.driver and prev is None:
                return []  # already unbound: the kernel has nothing to do
            self.driver[bdf] = None
            left = prev if prev else (e.driver if e.driver != "vfio-pci" or not prev else None)
            return [ev.DeviceUnbound(ts_ns=t, source=KATA_LOG, bdf=bdf, previous_driver=left)]
        drv = None
        if e.control == "drivers_probe":
            drv = self.override.get(bdf)
        elif e.control == "bind":
            drv = e.driver
        if not drv or self.driver.get(bdf) == drv:
            return []
        prev = self.driver.get(bdf)
        self.driver[bdf] = drv
        return [ev.DeviceBound(ts_ns=t, source=KATA_LOG, bdf=bdf, driver=drv,
                               previous_driver=prev)]


def run(paths: Iterable[str], options: Options,
        progress: Callable[[int], None] | None = None) -> Report:
    """Read, align and replay: the whole postmortem."""
    inputs = open_inputs(paths, options)
    return replay(inputs, options, progress)


def finding_record(f: ev.Finding) -> dict[str, object]:
    """A finding in the journal's (the live agent's) schema."""
    return codec.to_record(f)
