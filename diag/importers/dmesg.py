"""Provides the importer of kernel log text: `dmesg` output (`[<seconds>] text`, monotonic stamps).

The kernel's own vfio-pci lines (an unbind waiting for the process that holds the device:
`vfio-pci <BDF>: Relaying device request to user (#N)`) are matched with the Kata source's
signature catalogue, as the live agent matches them from /dev/kmsg. Raw stamps are seconds
since boot (CLOCK_MONOTONIC): postmortem aligns them like udevadm's. `dmesg -T` stamps
(`[Thu Dec  3 06:29:12 2026]`) are wall-clock times in the capturing host's zone, read as UTC
(said in the report), to the second only, and may be off after a suspend (dmesg's own caveat).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator

from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line, register, text_lines
from diag.importers.logfmt import SOURCE
from diag.importers.textlog import MAX_BYTES
from diag.sources.kata import signatures

_LINE = re.compile(r"^(?:<\d+>)?\[\s*(\d{1,10})\.(\d{1,9})\]\s?(.*)$")
_HUMAN = re.compile(r"^\[(?:[A-Z][a-z]{2} )?([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) "
                    r"(\d{4})\]\s?(.*)$")
_MON = {m: i for i, m in enumerate(calendar.month_abbr) if m}


def parse_dmesg(lines: Iterable[str], stats: FileStats | None = None) -> Iterator[ev.Event]:
    """Decode `dmesg` lines; the ones matching a signature become LogLineMatched (monotonic ns)."""
    st = stats if stats is not None else FileStats("<dmesg>")
    unmatched = 0
    for lineno, line in text_lines(lines, st):
        m = _LINE.match(line)
        h = None if m else _HUMAN.match(line)
        if not m and not h:
            st.bad(lineno, "not a dmesg line ([seconds] text)", line)
            continue
        if m:
            sec, frac, text = m.groups()
            ts = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
        else:
            assert h is not None
            mon, day, hh, mi, ss, year, text = h.groups()
            ts = calendar.timegm((int(year), _MON.get(mon, 1), int(day), int(hh), int(mi),
                                  int(ss), 0, 0, 0)) * 1_000_000_000
        hit = signatures.match(text)
        if hit is None:
            unmatched += 1
            continue
        st.events += 1
        yield ev.LogLineMatched(
            ts_ns=ts, source=SOURCE,
            signature=hit.signature.id, text=text, origin="dmesg", level="",
            bdf=hit.bdf, iommu_group=hit.iommu_group,
        )
    if unmatched:
        st.note(f"{unmatched} kernel line(s) matched no known signature")


class _DmesgImporter:
    name = "dmesg"
    description = "dmesg output ([seconds since boot] text)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:100] if x.strip()]
        return bool(lines) and sum(bool(_LINE.match(x) or _HUMAN.match(x))
                                   for x in lines) * 10 >= len(lines) * 9

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        decoded = [decode_line(b) for b in bounded_lines_bytes(lines, stats)]
        human = sum(bool(_HUMAN.match(x)) for x in decoded[:100]) > sum(
            bool(_LINE.match(x)) for x in decoded[:100])
        if human:
            stats.note("dmesg -T: wall-clock times of the capturing host, to the second, read "
                       "as UTC")
        return Parsed(events=parse_dmesg(decoded, stats),
                      clock="realtime" if human else "monotonic",
                      resolution_ns=1_000_000_000 if human else 0)


def bounded_lines_bytes(lines: Iterable[bytes], st: FileStats) -> Iterable[bytes]:
    total = 0
    for b in lines:
        total += len(b)
        if total > MAX_BYTES:
            st.truncated = True
            st.note(f"only the first {MAX_BYTES // (1024 * 1024)} MiB were read")
            return
        yield b


register(_DmesgImporter())
