"""Provides the importer of kernel log text: `dmesg` output (`[<seconds>] text`, monotonic stamps).

The kernel's own vfio-pci lines (an unbind waiting for the process that holds the device:
`vfio-pci <BDF>: Relaying device request to user (#N)`) are matched with the Kata source's
signature catalogue, as the live agent matches them from /dev/kmsg. Stamps are seconds since
boot (CLOCK_MONOTONIC): postmortem aligns them like udevadm's. `dmesg -T` (human times) is not
read: the kernel itself says those times may be wrong after suspend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line, register, text_lines
from diag.importers.logfmt import SOURCE
from diag.sources.kata import signatures

_LINE = re.compile(r"^(?:<\d+>)?\[\s*(\d{1,10})\.(\d{1,9})\]\s?(.*)$")


def parse_dmesg(lines: Iterable[str], stats: FileStats | None = None) -> Iterator[ev.Event]:
    """Decode `dmesg` lines; the ones matching a signature become LogLineMatched (monotonic ns)."""
    st = stats if stats is not None else FileStats("<dmesg>")
    unmatched = 0
    for lineno, line in text_lines(lines, st):
        m = _LINE.match(line)
        if not m:
            st.bad(lineno, "not a dmesg line ([seconds] text)", line)
            continue
        sec, frac, text = m.groups()
        hit = signatures.match(text)
        if hit is None:
            unmatched += 1
            continue
        st.events += 1
        yield ev.LogLineMatched(
            ts_ns=int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]), source=SOURCE,
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
        return bool(lines) and sum(bool(_LINE.match(x)) for x in lines) * 10 >= len(lines) * 9

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        return Parsed(events=parse_dmesg((decode_line(b) for b in lines), stats),
                      clock="monotonic")


register(_DmesgImporter())
