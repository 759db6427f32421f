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
import itertools
import operator
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from diag import events as ev
from diag.common.bdf import is_bdf
from diag.common.errors import DiagError
from diag.common.when import parse_when
from diag.core.correlator import Correlator
from diag.events import replace
from diag.postmortem.align import align_inputs
from diag.postmortem.dedupe import MAX_SCAN, Dedupe, Item, deduped
from diag.postmortem.inputs import Input, Options, open_inputs
from diag.postmortem.katakernel import KernelFromKata
from diag.postmortem.moment import end_is_later, listing_notes, place_listings
from diag.postmortem.report import BOOT_RELATIVE_NS, Entry, Filter, FindingBook, Report
from diag.render import ALWAYS_LOGGED

Segment = tuple[int, int, Sequence[ev.Event]]
"""(input index, sequence of its first event, events): a run of one input's events in merge
order, what the replay takes at a time (the agent's journal: a block of lines)."""
Rec = tuple[int, int, int, int, ev.Event]
"""A timeline entry as kept: (seq, stamp, input index (-1: a finding), sequence, event)."""

_TS = operator.attrgetter("ts_ns")

TICK_NS = 1_000_000_000
"""Step of synthetic time advance across gaps (inputs other than the agent's journal)."""
MAX_TICKS_PER_GAP = 3600
"""Beyond this many steps in one gap the step grows (a day-long gap costs 3,600 advances)."""




def _identity_only(e: ev.InventoryObserved) -> ev.InventoryObserved:
    """An untimed listing's devices without their drivers: who they are, not what they did."""
    return ev.replace(e, devices=tuple(
        ev.replace(d, driver=None, driver_override=None, vfio_group_path=None) for d in e.devices))


def _stream(inp: Input, base_ns: int | None) -> Iterator[Segment]:
    """One input's events in its own order, as segments: a state listing placed in time, a
    timed input's list whole, the agent's journal block by block as it is read."""
    idx = inp.index
    if inp.events is not None:
        if inp.clock != "static":
            if inp.events:
                yield (idx, 0, inp.events)
            return
        for n, e in enumerate(inp.events):
            if inp.at_ns is not None:
                # Taken when the user said: who the devices are is known from the start, the
                # drivers it shows are the state at that moment.
                if isinstance(e, ev.InventoryObserved) and base_ns is not None \
                        and base_ns <= inp.at_ns:
                    yield (idx, -1 - n, (ev.replace(_identity_only(e), ts_ns=base_ns - 1),))
                e = ev.replace(e, ts_ns=inp.at_ns)
            else:
                ts = (base_ns - 1) if base_ns is not None else 0
                if base_ns is not None and isinstance(e, ev.InventoryObserved):
                    # When it was listed is unknown; its drivers would claim the state at the
                    # start (and hide a rebind as "already on vfio-pci at start").
                    e = _identity_only(e)
                e = ev.replace(e, ts_ns=ts)
            yield (idx, n, (e,))
        return
    assert inp.parsed is not None
    if inp.parsed.batches is not None:
        n = 0
        for batch in inp.parsed.batches:
            yield (idx, n, batch)
            n += len(batch)
        return
    n, it = 0, iter(inp.parsed.events)
    while chunk := list(itertools.islice(it, 1024)):  # streamed: an input read lazily
        yield (idx, n, chunk)
        n += len(chunk)


def _merge(streams: list[Iterator[Segment]]) -> Iterator[Segment]:
    """The inputs' segments merged by stamp, as `heapq.merge` of their (stamp, input, n, event)
    items would (each input keeps its own order; of two inputs the earlier stamp first, on a
    tie the lower input), but a run of one input's events before the next input's head goes on
    as one segment: rotated parts and inputs that do not overlap cost nothing per event."""
    heap: list[tuple[int, int, int, Sequence[ev.Event], Iterator[Segment]]] = []
    for it in streams:
        for idx, n0, events in it:
            if events:
                heap.append((events[0].ts_ns, idx, n0, events, it))
                break
    heapq.heapify(heap)
    while len(heap) > 1:
        _, idx, n0, events, it = heapq.heappop(heap)
        other_ts, other_idx = heap[0][0], heap[0][1]
        count = len(events)
        if events[-1].ts_ns < other_ts and max(map(_TS, events)) < other_ts:
            j = count  # the whole segment goes before the next input's head
        else:
            j = 0
            for e in events:
                ts = e.ts_ns
                if ts > other_ts or (ts == other_ts and idx > other_idx):
                    break
                j += 1
        if j:
            yield (idx, n0, events if j == count else events[:j])
        if j < count:
            rest = events[j:]
            heapq.heappush(heap, (rest[0].ts_ns, idx, n0 + j, rest, it))
            continue
        for idx, n0, events in it:
            if events:
                heapq.heappush(heap, (events[0].ts_ns, idx, n0, events, it))
                break
    if heap:
        _, idx, n0, events, it = heap[0]
        yield (idx, n0, events)
        yield from it


def _items(segments: Iterator[Segment]) -> Iterator[Item]:
    """Segments as one item per event (for the dedupe and the kernel facts of Kata's lines)."""
    for idx, n0, events in segments:
        for k, e in enumerate(events, n0):
            yield (e.ts_ns, idx, k, e)


def _segments(items: Iterator[Item]) -> Iterator[Segment]:
    for _, idx, n, e in items:
        yield (idx, n, (e,))


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
                    return ev.replace(e, bdf=bdf)
        return e




CONTEXT = 20
"""Entries kept before and after each finding once the timeline is too long to keep whole
(fewer for a small --limit: a sixteenth of it)."""


class _Keeper:
    """The bounded timeline: every entry while they fit in `limit`; past that, the first
    quarter, each finding with CONTEXT entries either side (up to half), and the last quarter.

    Entries are the merge's cheap tuples `(seq, ts, input, n, event)` in a ring of the last
    `limit + 1`; what is kept is decided lazily, at a finding and when the CONTEXT entries after
    one have come (`trigger`), so a million-event replay pays a tuple and a ring append per
    event (the loop of `_Feed.run` does that itself and calls `fire` at `trigger`).
    """

    NEVER = -1

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seq = 0
        self.ring: deque[Rec] = deque(maxlen=limit + 1)
        quarter = max(1, limit // 4)
        self.head_n = quarter
        self.tail_n = quarter
        self.context = min(CONTEXT, max(1, limit // 16))
        self.head: list[Rec] = []
        self.kept: list[Rec] = []
        self.kept_cap = max(0, limit - 2 * quarter)
        self.fits = True
        self.mark = 0
        """Seq of the last entry kept (the head's last before any): entries after it that
        are not kept after a finding are the context before the next one."""
        self.after = 0
        """Entries after `mark` still to keep (after a finding)."""
        self.trigger = limit + 1
        """The seq at which `fire` must run: the timeline outgrows the limit, or the entries
        after a finding are all in; NEVER when nothing waits."""

    def add(self, item: Item) -> None:
        """One entry (a finding: input index -1)."""
        self.seq = seq = self.seq + 1
        self.ring.append((seq, *item))
        if item[1] < 0 and not self.fits:
            self._finding(seq)
        elif seq == self.trigger:
            self.fire()

    def fire(self) -> None:
        """At `trigger`: the timeline outgrew the limit, or a finding's after-context is in."""
        seq = self.seq
        if self.fits:
            if seq <= self.limit:
                return
            self.fits = False
            self.head = list(self.ring)[: self.head_n]
            self.mark = self.head_n
            self.trigger = self.NEVER
            for rec in list(self.ring)[self.head_n:]:  # what came after the head, in order
                if rec[2] < 0:
                    self._finding(rec[0])
                elif rec[0] == self.trigger:
                    self._flush(rec[0])
            return
        self._flush(seq)

    def _recs(self, first: int, last: int) -> list[Rec]:
        """Entries first..last (seq), from the ring (they are among its newest)."""
        if last < first:
            return []
        newest = self.ring[-1][0]
        ring = self.ring
        return [ring[k - newest - 1] for k in range(first, last + 1)]

    def _flush(self, upto: int) -> None:
        """Keep the entries after the last finding up to `upto` (seq), as many as it keeps."""
        if self.after > 0:
            last = min(upto, self.mark + self.after, self.mark + self.kept_cap - len(self.kept))
            if last > self.mark:
                self.kept.extend(self._recs(self.mark + 1, last))
                self.after -= last - self.mark
                self.mark = last
            if len(self.kept) >= self.kept_cap:
                self.after = 0
        self.trigger = self.mark + min(self.after, self.kept_cap - len(self.kept)) \
            if self.after > 0 else self.NEVER

    def _finding(self, seq: int) -> None:
        """A finding opened or resolved at `seq`: keep it with the context before it."""
        self._flush(seq - 1)
        room = self.kept_cap - len(self.kept)
        if room <= 0:
            return
        if self.after <= 0 and room > 1:  # the entries since the last kept ones: the context
            first = max(self.mark + 1, seq - min(self.context, room - 1))
            self.kept.extend(self._recs(first, seq - 1))
        self.kept.extend(self._recs(seq, seq))
        self.mark = seq
        self.after = self.context
        self._flush(seq)

    def result(self) -> list[Rec]:
        if self.fits:
            return list(self.ring)
        self._flush(self.seq)
        merged = {r[0]: r for r in self.head}
        merged.update((r[0], r) for r in self.kept)
        ring = self.ring
        merged.update((r[0], r) for r in list(ring)[max(0, len(ring) - self.tail_n):])
        return [merged[k] for k in sorted(merged)]


def replay(
    inputs: list[Input], options: Options,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Feed every input's events, merged by stamp, through a fresh Correlator."""
    report = Report(inputs=inputs, timeline=[], options=options)
    report.clock_notes = align_inputs(inputs, options)
    report.clock_notes.extend(place_listings(inputs))
    merged, base, dedupe = _merged(inputs)
    resolve_times(options, base)
    kernel = KernelFromKata(inputs)
    if kernel.active:
        merged = _segments(kernel.transform(_items(merged)))
    feed = _Feed(inputs, options, report)
    feed.run(merged, progress)
    feed.finish(base, dedupe)
    return report


def resolve_times(options: Options, base: int | None) -> None:
    """--since / --until given relative to the inputs (`16:07:58` on the day of the first
    stamp, `+90` after it) as times: the one parser `tui --at` uses, with the same start."""
    start = base if base is not None and base >= BOOT_RELATIVE_NS else None
    for name in ("since", "until"):
        text = getattr(options, f"{name}_text")
        if text is None:
            continue
        try:
            setattr(options, f"{name}_ns", parse_when(text, start))
        except ValueError as exc:
            why = "" if start is not None else " (no input has a wall-clock time to count from)"
            raise DiagError(f"--{name}: {exc}{why}", title="Bad option",
                            hint="see vfiowatch postmortem --help") from None


def _merged(inputs: list[Input]) -> tuple[Iterator[Segment], int | None, Dedupe | None]:
    """Every input's events as one stream in stamp order (state listings first, at the earliest
    stamp), copies of one happening merged; with the earliest stamp and the merger."""
    timed_streams = []
    first_stamps = []
    for inp in inputs:
        if inp.parsed is None or inp.clock == "static":
            continue
        it = _stream(inp, None)
        head = next(it, None)
        if head is not None:
            first_stamps.append(head[2][0].ts_ns)
            timed_streams.append(itertools.chain((head,), it))
    base = min(first_stamps) if first_stamps else None
    static = [_stream(i, base) for i in inputs
              if i.parsed is not None and i.clock == "static" and i.events]
    streams = [*static, *timed_streams]
    merged: Iterator[Segment] = streams[0] if len(streams) == 1 else _merge(streams)
    dedupe: Dedupe | None = None
    if any(i.parsed is not None and i.format != "journal" for i in inputs):
        dedupe = Dedupe({i.index: i.alignment.uncertainty_ns for i in inputs
                          if i.alignment is not None and i.alignment.uncertainty_ns is not None})
        merged = _segments(deduped(_items(merged), dedupe))
    return merged, base, dedupe


class _Feed:
    """One replay: the merged stream through a Correlator, the findings it raises and the
    timeline the report keeps."""

    def __init__(self, inputs: list[Input], options: Options, report: Report) -> None:
        self.inputs = inputs
        self.options = options
        self.report = report
        self.corr = Correlator(options.config)
        self.filt = Filter(options)
        for inp in inputs:
            if inp.parsed is not None and inp.parsed.pods:
                self.filt.learn_pods(inp.parsed.pods)
        self.findings = FindingBook(options.keep_resolved)
        self.shown = FindingBook(options.keep_resolved) if not self.filt.open else None
        """The findings the filter shows (the exit status follows them)."""
        self.recorded = FindingBook(options.keep_resolved)
        """The findings a replayed agent journal carried (to compare with the replay's)."""
        self.logged = FindingBook(options.keep_resolved)
        """The findings the agent's JSON logs carried (flat: compared by id, severity, status)."""
        self.log_idx = {i.index for i in inputs if i.format == "agent-logs"}
        self.raw_logged = 0
        """Events in the agent's logs that it logs only with `--log-events`."""
        self.keeper = _Keeper(options.timeline_limit) if options.timeline_limit > 0 else None
        self.has_journal = any(i.format == "journal" and i.parsed is not None for i in inputs)
        self.static_idx = {i.index for i in inputs if i.clock == "static"}
        self.last_ts: int | None = None
        # an input keeps its own order, so a line placed a little earlier (a fact derived from
        # Kata's line, a dmesg stamp cut to the second) may come last: the span ends at the latest
        self.max_ts: int | None = None
        self.total = 0
        """Timeline entries that passed the filters."""
        self.count = 0
        """Events read."""
        self.seen_by: dict[str, set[int]] = {}
        """Device or sandbox -> the inputs whose events are about it (what a finding rests on)."""

    def note(self, transitions: list[ev.Finding]) -> None:
        """Book finding transitions; opened and resolved ones join the timeline."""
        for f in transitions:
            self.report.transitions += 1
            self.findings.add(f)
            if self.shown is not None and self.filt.shows_finding(f):
                self.shown.add(f)
            if f.pod and self.filt.pod_matches(f.pod_namespace, f.pod):
                self.filt.matched = True
            if f.status != "updated" and self.filt.shows_finding(f):
                self.total += 1
                if self.keeper is not None:
                    self.keeper.add((f.ts_ns, -1, 0, f))

    def advance_to(self, ts: int) -> None:
        """Tick the core across a gap so grace periods expire as they would have live."""
        assert self.last_ts is not None
        gap = ts - self.last_ts
        step = TICK_NS if gap <= TICK_NS * MAX_TICKS_PER_GAP else gap // MAX_TICKS_PER_GAP
        t = (self.last_ts // step + 1) * step
        while t < ts:
            self.note(self.corr.advance(t))
            t += step

    def run(self, merged: Iterator[Segment], progress: Callable[[int], None] | None) -> None:
        """Feed the stream up to --until. The hot loop: a segment at a time, locals only, and
        per event what must be per event (the core's feed, the timeline's ring, the subjects
        of events that name a device)."""
        options, report, filt, keeper = self.options, self.report, self.filt, self.keeper
        feed, recorded, static_idx = self.corr.feed, self.recorded, self.static_idx
        logged, log_idx = self.logged, self.log_idx
        seen_by = self.seen_by
        enrich = _LinkEnricher() if any(i.format == "ipmon" for i in self.inputs) else None
        until = options.until_ns if options.until_ns is not None else 1 << 80
        ticks_needed = not self.has_journal
        unfiltered = filt.open
        include_ticks = options.include_ticks
        sandbox_filter = filt.by_sandbox
        finding, ticked = ev.Finding, ev.ClockTicked
        subject_kind = _SUBJECT_KIND
        ring_append = keeper.ring.append if keeper is not None else None
        seq = keeper.seq if keeper is not None else 0
        trigger = keeper.trigger if keeper is not None else _Keeper.NEVER
        first = report.first_ns if report.first_ns is not None else 1 << 80
        last_ts = self.last_ts
        max_ts = self.max_ts if self.max_ts is not None else -(1 << 80)
        count = shown = 0
        for idx, n0, events in merged:
            timed = idx not in static_idx
            if idx in log_idx:
                self.raw_logged += sum(type(e) not in ALWAYS_LOGGED for e in events)
            n = n0 - 1
            for e in events:
                n += 1
                ts = e.ts_ns
                if ts > until:
                    break
                cls = type(e)
                if cls is finding:
                    count += 1
                    (logged if idx in log_idx else recorded).add(e)  # type: ignore[arg-type]
                    continue
                count += 1
                if enrich is not None:
                    e = enrich(e)
                if ticks_needed and last_ts is not None and ts - last_ts > TICK_NS:
                    self.last_ts = last_ts
                    if keeper is not None:
                        keeper.seq = seq
                    self.advance_to(ts)
                    if keeper is not None:
                        seq, trigger = keeper.seq, keeper.trigger
                if timed and ts < first:
                    first = ts
                last_ts = ts
                if ts > max_ts:
                    max_ts = ts
                if sandbox_filter:
                    filt.learn(e)
                kind = subject_kind[cls]
                if kind == 1:
                    bdf = e.bdf  # type: ignore[attr-defined]
                    if bdf is not None:
                        has = seen_by.get(bdf)
                        if has is None:
                            seen_by[bdf] = {idx}
                        elif idx not in has:
                            has.add(idx)
                elif kind:
                    for key in _subjects(e):
                        seen_by.setdefault(key, set()).add(idx)
                transitions = feed(e)
                if (cls is not ticked or include_ticks) if unfiltered else filt.shows(e):
                    shown += 1
                    if ring_append is not None:
                        seq += 1
                        ring_append((seq, ts, idx, n, e))
                        if seq == trigger:
                            keeper.seq = seq  # type: ignore[union-attr]
                            keeper.fire()  # type: ignore[union-attr]
                            trigger = keeper.trigger  # type: ignore[union-attr]
                if transitions:
                    self.total += shown
                    shown = 0
                    if keeper is not None:
                        keeper.seq = seq
                    self.note(transitions)
                    if keeper is not None:
                        seq, trigger = keeper.seq, keeper.trigger
            else:
                if progress is not None and count >> 14 != (count - len(events)) >> 14:
                    progress(count)
                continue
            break  # --until
        self.total += shown
        if keeper is not None:
            keeper.seq = seq
        self.count = count
        self.last_ts = last_ts
        if max_ts != -(1 << 80):
            self.max_ts = max_ts
        if first != 1 << 80:
            report.first_ns = first
        if ticks_needed:
            self._judge_end()
        self.report.end_ns = self.corr.model.now_ns

    def _judge_end(self) -> None:
        """Let time run on to the end of the inputs (inputs without ticks): to --until, or past
        every grace period when the end is known to be later than the last event."""
        last, until, report = self.last_ts, self.options.until_ns, self.report
        if last is None:
            return
        if until is not None:
            if until > last:
                self.advance_to(until)
                self.note(self.corr.advance(until))
                report.clock_notes.append(f"conditions judged at --until ({until} ns): time let "
                                          "run on to it")
            return
        later = end_is_later(self.inputs, self.corr.snapshot())
        if later:
            cfg = self.corr.config
            end = last + max(cfg.stranded_grace_ns, cfg.stuck_grace_ns,
                             cfg.netdev_grace_ns) + TICK_NS
            self.advance_to(end)
            self.note(self.corr.advance(end))
            report.clock_notes.append(later + "; conditions with a grace period (stranded, "
                                      "stuck, netdev lost) are judged there as lasting past it")

    def finish(self, base: int | None, dedupe: Dedupe | None) -> None:
        """Fill the report: span, notes, totals, findings, final state and the timeline."""
        report, inputs = self.report, self.inputs
        report.last_ns = self.max_ts if report.first_ns is not None else None
        report.state = self.corr.snapshot()
        if base is not None:
            report.clock_notes.extend(listing_notes(inputs, report.state))
        if dedupe is not None and dedupe.dropped:
            report.clock_notes.append(
                f"{dedupe.dropped} event(s) seen twice (by two inputs, or one log line in two "
                "places) were merged into one: same happening, no conflicting field, stamps "
                "within twice the clocks' uncertainty (at least 50 ms)")
        if dedupe is not None and dedupe.capped:
            report.clock_notes.append(
                f"{dedupe.capped} event(s) had more than {MAX_SCAN} waiting copies of the same "
                "kind within the merge window (a flood, or a hostile input): each was compared "
                f"with {MAX_SCAN} of them only, so a copy seen twice may be counted twice")
        report.events_total = self.count
        report.timeline_total = self.total
        if self.logged.total:
            self._adopt_logged()
        report.findings = list(self.findings.items.values())
        report.book = self.findings
        if not self.filt.open:
            report.filter, report.shown_book = self.filt, self.shown
        if self.filt.by_subject and not self._matched():
            report.unmatched = self._unmatched()
        report.finding_inputs = self._finding_inputs()
        _name_pods(report)
        report.recorded = self.recorded
        report.timeline.extend(self._entries())
        _mark_order(report.timeline)
        for inp in inputs:
            if inp.format == "journal" and inp.stats.error:
                report.clock_notes.append(f"{inp.path}: {inp.stats.error}")

    def _adopt_logged(self) -> None:
        """The findings the agent logged, against the replay's: said on each log input; one the
        replay did not raise (its events are not in the logs) is shown as the agent logged it,
        and counts for the exit status. Why they are not there is said from the logs: no raw
        event at all means the agent ran without --log-events; with some, the logs begin after
        (or were cut before) the events that raised it."""
        def key(f: ev.Finding) -> tuple[str, str, str]:
            return f.rule, f.severity.label, f.status

        def us(fid: str) -> str:
            """The id to the microsecond: log lines stamp their events to the microsecond."""
            head, _, first = fid.rpartition("/")
            return f"{head}/{int(first) // 1000}" if first.isdigit() else fid

        raised = {us(fid): f for fid, f in self.findings.items.items()}
        missing = [f for fid, f in self.logged.items.items() if us(fid) not in raised]
        differ = [fid for fid, f in self.logged.items.items()
                  if us(fid) in raised and key(raised[us(fid)]) != key(f)]
        n = self.logged.total
        if not missing and not differ:
            said = f"the agent logged {n} finding(s): the replay raised the same"
        else:
            why = ("the agent ran without --log-events" if not self.raw_logged else
                   ("the agent ran with --log-events, but the logs begin after those events "
                    "or have a gap"))
            said = (f"the agent logged {n} finding(s): "
                    + (f"{len(missing)} not raised by the replay (their events are not in the "
                       f"logs: {why}), shown as logged" if missing else "")
                    + ("; " if missing and differ else "")
                    + (f"{len(differ)} raised with another severity or status: "
                       + ", ".join(differ[:5]) if differ else ""))
        for inp in self.inputs:
            if inp.index in self.log_idx:
                inp.stats.note(said)
        for f in missing:
            labels = (*f.labels, ("inferred", "as the agent logged it (no events to replay)"))
            f = replace(f, labels=labels)
            self.findings.add(f)
            if self.shown is not None and self.filt.shows_finding(f):
                self.shown.add(f)
            if f.status != "updated" and self.filt.shows_finding(f):
                self.total += 1
                if self.keeper is not None:
                    self.keeper.add((f.ts_ns, -1, 0, f))

    def _matched(self) -> bool:
        """Every subject asked for is in the inputs: the device in any event or listing, the
        sandbox in any event, the pod or namespace named for a sandbox or a finding."""
        filt, seen = self.filt, self.seen_by
        if filt.device is not None and filt.device not in seen:
            return False
        if filt.sandbox is not None and not any(filt.is_mine(k) for k in seen if not is_bdf(k)):
            return False
        return not ((filt.pod is not None or filt.namespace is not None)
                    and not filt.pod_sandboxes and not filt.matched)

    def _unmatched(self) -> str:
        """A filter that matched nothing: what it asked, and what the inputs hold instead."""
        filt = self.filt
        devices = sorted(k for k in self.seen_by if is_bdf(k))
        sandboxes = sorted({k[:12] for k in self.seen_by if not is_bdf(k)})
        held = []
        if filt.device is not None:
            held.append(f"devices: {', '.join(devices[:12]) or 'none'}"
                        + (f" (+{len(devices) - 12})" if len(devices) > 12 else ""))
        if filt.sandbox is not None:
            held.append(f"sandboxes: {', '.join(sandboxes[:12]) or 'none'}")
        if filt.pod is not None or filt.namespace is not None:
            pods = sorted(f"{ns or '?'}/{pod}" for ns, pod in filt.pods_seen)
            held.append(f"pods: {', '.join(pods[:12]) or 'none named'}")
        return f"{filt.asked()} matches nothing in the inputs; they hold {'; '.join(held)}"

    def _finding_inputs(self) -> dict[str, list[str]]:
        """Finding id -> the inputs whose events are about its device or sandbox."""
        names = {i.index: i.path for i in self.inputs}
        out = {}
        for f in self.report.findings:
            idxs: set[int] = set()
            for key in (f.bdf, f.sandbox_id):
                if key:
                    idxs |= self.seen_by.get(key, set())
            out[f.finding_id] = sorted(names[i] for i in idxs)
        return out

    def _entries(self) -> list[Entry]:
        """The kept timeline as Entries, each with its stamp's uncertainty."""
        inputs = self.inputs
        unc_of = {i.index: (i.alignment.uncertainty_ns if i.alignment and i.alignment.uncertainty_ns
                            is not None else (-1 if i.alignment else 0)) for i in inputs}
        per_event_unc = {i.index: i.uncertainties for i in inputs if i.uncertainties}
        out = []
        for seq, ts, idx, n, e in self.keeper.result() if self.keeper is not None else ():
            u = unc_of.get(idx, 0) if idx >= 0 else 0
            pu = per_event_unc.get(idx)
            if pu is not None and n < len(pu):
                u = pu[n]
            out.append(Entry(ts, idx, e, u or 0, static=idx in self.static_idx, seq=seq))
        return out


def _pod_of(sandbox_id: str, inputs: list[Input]) -> tuple[str, str, str] | None:
    """(namespace, pod, input) of a sandbox as a listing that ties sandboxes to pods names it
    (its full id, or the prefix of at least 12 characters crictl shows)."""
    for inp in inputs:
        for key, (ns, pod) in (inp.parsed.pods if inp.parsed is not None else {}).items():
            if key == sandbox_id or (min(len(key), len(sandbox_id)) >= 12 and (
                    sandbox_id.startswith(key) or key.startswith(sandbox_id))):
                return ns, pod, inp.path
    return None


def _name_pods(report: Report) -> None:
    """A finding about a sandbox without its pod gets the pod a listing names (crictl); the
    finding says where it came from and rests on that listing too."""
    for n, f in enumerate(report.findings):
        found = _pod_of(f.sandbox_id, report.inputs) if f.sandbox_id and not f.pod else None
        if found is None:
            continue
        ns, pod, path = found
        said = dict(f.labels).get("inferred")
        inferred = (f"{said}; " if said else "") + f"the pod: from {os.path.basename(path)}"
        labels = (*(kv for kv in f.labels if kv[0] != "inferred"), ("inferred", inferred))
        report.findings[n] = ev.replace(f, pod=pod, pod_namespace=ns or None, labels=labels)
        report.finding_inputs[f.finding_id] = sorted(
            {*report.finding_inputs.get(f.finding_id, []), path})


class _SubjectKinds(dict[type, int]):
    """Event class -> how `_Feed.run` finds its subjects: 1 its `bdf` field alone, 2 by
    `_subjects`, 0 none (no field names one). Filled as classes come."""

    def __missing__(self, cls: type) -> int:
        fields = set(getattr(cls, "__struct_fields__", ()))
        special = cls in (ev.SysfsWriteObserved, ev.SandboxStarted, ev.InventoryObserved)
        kind = 2 if special or "sandbox_id" in fields else 1 if "bdf" in fields else 0
        self[cls] = kind
        return kind


_SUBJECT_KIND = _SubjectKinds()


def _subjects(e: ev.Event) -> tuple[str, ...]:
    """The device and sandbox an event is about (for what a finding rests on)."""
    out = []
    bdf = getattr(e, "bdf", None)
    if isinstance(bdf, str):
        out.append(bdf)
    sid = e.actor.sandbox_id if isinstance(e, ev.SysfsWriteObserved) else getattr(
        e, "sandbox_id", None)
    if isinstance(sid, str):
        out.append(sid)
    if isinstance(e, ev.SandboxStarted):
        out.extend(e.vmm_vfio_devices)
    if isinstance(e, ev.InventoryObserved):
        out.extend(d.bdf for d in e.devices)
    return tuple(out)


def _mark_order(timeline: list[Entry]) -> None:
    """Flag neighbours from different inputs closer than their combined uncertainty, and an
    entry stamped earlier than the one before it (recorded late: an eBPF record that waited in
    its buffer; the timeline keeps the order the agent saw them in)."""
    for i in range(1, len(timeline)):
        a, b = timeline[i - 1], timeline[i]
        if not (a.static or b.static) and b.seq == a.seq + 1 and b.ts_ns < a.ts_ns \
                and not (b.uncertainty_ns < 0 or a.uncertainty_ns < 0):
            timeline[i] = b = replace(b, order_uncertain=True)
        if a.input == b.input or a.input < 0 or b.input < 0 or a.static or b.static \
                or b.seq != a.seq + 1:
            continue
        if a.uncertainty_ns < 0 or b.uncertainty_ns < 0:
            unsure = True
        else:
            unsure = b.ts_ns - a.ts_ns <= max(a.uncertainty_ns, b.uncertainty_ns) and \
                max(a.uncertainty_ns, b.uncertainty_ns) > 0
        if unsure:
            timeline[i - 1] = ev.replace(a, order_uncertain=True)
            timeline[i] = ev.replace(b, order_uncertain=True)


def run(paths: Iterable[str], options: Options,
        progress: Callable[[int], None] | None = None) -> Report:
    """Read, align and replay: the whole postmortem."""
    inputs = open_inputs(paths, options)
    return replay(inputs, options, progress)
