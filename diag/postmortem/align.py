"""Provides clock alignment for postmortem inputs: monotonic captures and untimed ones onto the wall clock.

The matching is pure; `align_inputs` applies it to the inputs (reading the head of the agent's
journals for reference events). Three ways, strongest first, and each says how sure it is:

1. An explicit offset (`--offset`): wall = monotonic + offset, exact by the user's word.
2. journald anchors: every journald entry has `__REALTIME_TIMESTAMP` and `__MONOTONIC_TIMESTAMP`
   of one boot, so `realtime - monotonic` is that boot's offset (its spread over the entries is
   the uncertainty: NTP steps, suspend). udevadm output has no boot id, so this is used only when
   the exports hold exactly one boot, and the report says it assumed so.
3. Matching events: the same kernel happening seen by two inputs (a VF's unbind in udevadm and in
   the agent's journal, a netdev's removal in udevadm and in `ip -ts monitor`) gives candidate
   offsets; the densest cluster (within `CLUSTER_NS`) wins, its median is the offset and its
   width the uncertainty. Fewer than two agreeing matches: not aligned, and the report says so.

Untimed inputs (plain `ip monitor`) get their stamps from matches in order (`place_untimed`):
each matched message takes the time of its counterpart, the ones between are spread evenly
between their matched neighbours, and the uncertainty is the gap they sit in.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace

from diag import events as ev
from diag.importers import Anchor, FileStats
from diag.postmortem.inputs import Alignment, Input, Options

CLUSTER_NS = 200_000_000
"""Matches closer than this (uevent vs rtnetlink arrive within milliseconds) are one cluster."""
MAX_PAIRS_PER_KEY = 64
Key = tuple[str, str]


def anchor_keys(events: Iterable[ev.Event]) -> list[tuple[int, Key, int]]:
    """The events two inputs can both have seen, as (position, key, stamp), in input order."""
    out: list[tuple[int, Key, int]] = []
    live: set[tuple[int, int]] = set()
    for pos, e in enumerate(events):
        t = type(e)
        key: Key | None = None
        if t is ev.DeviceBound or t is ev.DeviceUnbound or t is ev.DeviceAdded or t is ev.DeviceRemoved:
            key = (e.kind, e.bdf)  # type: ignore[attr-defined]
        elif t is ev.NetdevAdded:
            key = ("net+", e.ifname)  # type: ignore[attr-defined]
        elif t is ev.NetdevRemoved:
            key = ("net-", e.ifname)  # type: ignore[attr-defined]
        elif t is ev.VfioDeviceAdded and e.bdf:  # type: ignore[attr-defined]
            key = ("vfio+", e.bdf)  # type: ignore[attr-defined]
        elif t is ev.LinkChanged:
            assert isinstance(e, ev.LinkChanged)
            ident = (e.netns.inode, e.ifindex)
            if e.netns.is_host and ident not in live:
                key = ("net+", e.ifname)
            live.add(ident)
        elif t is ev.LinkRemoved:
            assert isinstance(e, ev.LinkRemoved)
            live.discard((e.netns.inode, e.ifindex))
            if e.netns.is_host:
                key = ("net-", e.ifname)
        if key is not None:
            out.append((pos, key, e.ts_ns))
    return out


def from_anchors(
    anchors: Sequence[Anchor], prefer_boot: str = "",
) -> tuple[Alignment | None, str]:
    """The offset of the boot the journald anchors describe; (None, why) when it is not clear.

    With several boots in the exports, `prefer_boot` (the boot id in the agent's journal header,
    the host the capture came from) picks one; otherwise which one is unknown.
    """
    boots: dict[str, list[int]] = {}
    for a in anchors:
        boots.setdefault(a.boot_id, []).append(a.realtime_ns - a.monotonic_ns)
    if not boots:
        return None, "no journald entries with both clocks"
    why = "the only boot in it"
    if len(boots) > 1:
        if prefer_boot not in boots:
            return None, f"the journald exports cover {len(boots)} boots; which one is unknown"
        boots = {prefer_boot: boots[prefer_boot]}
        why = "the boot of the agent's journal given with it"
    boot, diffs = next(iter(boots.items()))
    diffs.sort()
    off = diffs[len(diffs) // 2]
    spread = max(off - diffs[0], diffs[-1] - off)
    return Alignment(
        off, spread,
        f"assumed to be boot {boot[:8]}… of the journald export ({why}); "
        f"offset from {len(diffs)} journald entries", len(diffs),
    ), ""


def match_offset(
    mono: Sequence[tuple[int, Key, int]], real: Sequence[tuple[int, Key, int]], *,
    min_support: int = 2,
) -> Alignment | None:
    """The offset that makes the most keyed events of `mono` coincide with those of `real`."""
    by_key: dict[Key, list[int]] = {}
    for _, k, t in real:
        lst = by_key.setdefault(k, [])
        if len(lst) < MAX_PAIRS_PER_KEY:
            lst.append(t)
    diffs: list[int] = []
    per_key: dict[Key, int] = {}
    for _, k, t in mono:
        if per_key.get(k, 0) >= MAX_PAIRS_PER_KEY:
            continue
        per_key[k] = per_key.get(k, 0) + 1
        for r in by_key.get(k, ()):
            diffs.append(r - t)
    if not diffs:
        return None
    diffs.sort()
    best = (0, 0, 0)  # (count, lo index, hi index)
    j = 0
    for i in range(len(diffs)):
        while diffs[i] - diffs[j] > CLUSTER_NS:
            j += 1
        if i - j + 1 > best[0]:
            best = (i - j + 1, j, i)
    count, lo, hi = best
    if count < min_support:
        return None
    cluster = diffs[lo : hi + 1]
    off = cluster[len(cluster) // 2]
    unc = max(off - cluster[0], cluster[-1] - off)
    return Alignment(off, unc, f"matched {count} events with timed inputs", count)


def place_untimed(
    keyed: Sequence[tuple[int, Key, int]], reference: Sequence[tuple[int, Key, int]], count: int,
) -> tuple[list[int], list[int], int]:
    """Stamps and uncertainties for `count` untimed messages (positions 0..count-1).

    `keyed` holds the `anchor_keys` of the untimed messages; `reference` those of the timed
    inputs. Returns (stamps, uncertainties, matched); when
    nothing matched the stamps are the ordinals themselves and every uncertainty is -1.
    """
    ref_times: dict[Key, list[int]] = {}
    for _, k, t in sorted(reference, key=lambda x: x[2]):
        ref_times.setdefault(k, []).append(t)
    anchors: list[tuple[int, int]] = []
    last = -(1 << 62)
    for pos, k, _ in keyed:
        ordinal = pos + 1
        times = ref_times.get(k)
        if not times:
            continue
        i = bisect.bisect_left(times, last)
        if i < len(times):
            last = times[i]
            anchors.append((ordinal, last))
    if not anchors:
        return list(range(1, count + 1)), [-1] * count, 0
    stamps: list[int] = []
    uncs: list[int] = []
    ai = 0
    for n in range(1, count + 1):
        while ai < len(anchors) and anchors[ai][0] < n:
            ai += 1
        if ai < len(anchors) and anchors[ai][0] == n:
            stamps.append(anchors[ai][1])
            uncs.append(0)
            continue
        prev = anchors[ai - 1] if ai > 0 else None
        nxt = anchors[ai] if ai < len(anchors) else None
        if prev and nxt:
            span_n = nxt[0] - prev[0]
            t = prev[1] + (nxt[1] - prev[1]) * (n - prev[0]) // span_n
            stamps.append(t)
            uncs.append(nxt[1] - prev[1])
        elif nxt:  # before the first match: only "earlier than" is known
            stamps.append(nxt[1] - (nxt[0] - n) * 1000)
            uncs.append(-1)
        else:
            assert prev is not None
            stamps.append(prev[1] + (n - prev[0]) * 1000)
            uncs.append(-1)
    return stamps, uncs, len(anchors)


# --------------------------------------------------------------------------------------------
# Aligning the inputs
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


def _journal_keyed(inp: Input, limit: int = 20000) -> list[tuple[int, Key, int]]:
    """Keyed events of an agent journal (a second, bounded pass over its head)."""
    from itertools import islice

    from diag.importers import journal as jmod

    events = jmod.parse_file(inp.path, FileStats(inp.path)).events
    return anchor_keys(islice(events, limit * 10))[:limit]


def align_inputs(inputs: list[Input], options: Options) -> list[str]:
    """Give every monotonic and untimed input an offset (or say it has none); notes for the report."""
    aligner = _Aligner(inputs, options)
    monos = [i for i in inputs if i.parsed is not None and i.clock == "monotonic"]
    for inp in monos:
        aligner.monotonic(inp, len(monos))
    # Untimed inputs go last: they can lean on the monotonic ones just aligned.
    notes: list[str] = []
    for inp in inputs:
        if inp.parsed is not None and inp.clock == "none" and inp.events is not None:
            notes.extend(aligner.untimed(inp))
    for inp in inputs:
        res = inp.parsed.resolution_ns if inp.parsed is not None else 0
        if res and inp.clock == "realtime" and inp.alignment is None:
            # Wall-clock stamps cut to the second (dmesg -T): on the common clock to within that,
            # so the same kernel line in the journal is one happening, not two.
            inp.alignment = Alignment(0, res, f"stamps cut to {res / 1e9:g} s: placed to "
                                      "within that")
    return notes + _alignment_notes(inputs)


class _Aligner:
    """What the inputs offer to align with: journald's clock anchors, and the keyed events of
    the wall-clock inputs (read once, when first needed)."""

    def __init__(self, inputs: list[Input], options: Options) -> None:
        self.inputs = inputs
        self.offsets = {k if k == "*" else os.path.realpath(k): v
                        for k, v in options.offsets.items()}
        self.anchors = [a for i in inputs if i.parsed is not None for a in i.parsed.anchors]
        self.has_wall = any(i.parsed is not None and i.clock == "realtime" for i in inputs)
        self._reference: list[tuple[int, Key, int]] | None = None

    def reference(self) -> list[tuple[int, Key, int]]:
        """The keyed events of every wall-clock input."""
        if self._reference is None:
            self._reference = []
            for i in self.inputs:
                if i.clock != "realtime" or i.parsed is None:
                    continue
                if i.events is not None:
                    self._reference.extend(anchor_keys(i.events))
                else:
                    self._reference.extend(_journal_keyed(i))
        return self._reference

    def monotonic(self, inp: Input, n_monotonic: int) -> None:
        """An explicit --offset, else journald's anchors, else matched events, else not aligned."""
        explicit = self.offsets.get(os.path.realpath(inp.path), self.offsets.get("*"))
        if explicit is not None:
            inp.alignment = Alignment(explicit, 0, "explicit --offset")
        elif not self.has_wall and not self.anchors:
            inp.alignment = Alignment(0, 0, (
                "kept on its own clock (no wall-clock input): times are since boot"
                + ("; the monotonic inputs are assumed to come from one boot"
                   if n_monotonic > 1 else "")))
        else:
            a, why = from_anchors(self.anchors, _journal_boot(self.inputs))
            if a is None:
                a = match_offset(anchor_keys(inp.events or ()), self.reference())
                if a is None and why:
                    why = f"{why}; no events matched the timed inputs"
            inp.alignment = a or Alignment(
                0, None, "NOT aligned: " + (why or "nothing to align with")
                + "; stamps are time since boot, order against other inputs unknown"
                + " (give --offset)",
            )
        if inp.alignment.offset_ns and inp.events is not None:
            off = inp.alignment.offset_ns
            inp.events = [replace(e, ts_ns=e.ts_ns + off) for e in inp.events]

    def untimed(self, inp: Input) -> list[str]:
        """Stamps placed by matching with the timed and aligned monotonic inputs; notes."""
        assert inp.events is not None
        ref = list(self.reference())
        for other in self.inputs:
            if other is not inp and other.clock == "monotonic" and other.alignment and \
                    other.alignment.uncertainty_ns is not None and other.events is not None:
                ref.extend(anchor_keys(other.events))
        stamps, uncs, matched = place_untimed(anchor_keys(inp.events), ref, len(inp.events))
        if matched:
            inp.events = [replace(e, ts_ns=t) for e, t in zip(inp.events, stamps, strict=True)]
            inp.uncertainties = uncs
            inp.alignment = Alignment(0, max((u for u in uncs if u >= 0), default=0),
                                      f"no timestamps: placed by {matched} messages matched "
                                      "with timed inputs, the others between them", matched)
        else:
            inp.alignment = Alignment(0, None, "no timestamps and nothing to match: only the "
                                      "order within the file is known")
        if self.offsets.get(os.path.realpath(inp.path)) is not None:
            return [f"{inp.path}: --offset ignored (the file has no timestamps)"]
        return []


def _alignment_notes(inputs: list[Input]) -> list[str]:
    """One line per aligned input saying how, and the caveat of ip monitor's local time."""
    notes: list[str] = []
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
