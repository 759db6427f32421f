"""Provides the importer of IOMMU group listings: the `lsiommu`-style `IOMMU Group N <lspci line>`, the `IOMMU Group N:` block, and `find /sys/kernel/iommu_groups -type l`.

Operators paste these to show what shares a VF's group (a PCIe bridge, the GPU's audio
function). The result is one `InventoryObserved` of the listed devices with their group, class
and ids (no drivers: these listings name none), a `static` input like an lspci listing, so the
`iommu-group-not-viable` rule and the group of a QEMU `group N is not viable` line are known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from diag import events as ev
from diag.common.bdf import normalise_bdf
from diag.importers import FileStats, Parsed, register
from diag.importers.textlog import bounded_lines
from diag.sources.kata.loglines import MAX_LINE

SOURCE = "iommu-groups"
_BDF = r"(?P<bdf>(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])"
_DESC = r"(?:\s+(?P<desc>.*))?$"
ONE_LINE = re.compile(rf"^\s*IOMMU [Gg]roup (?P<group>\d+)\s+{_BDF}{_DESC}")
BLOCK = re.compile(r"^\s*IOMMU [Gg]roup (?P<group>\d+):?\s*$")
MEMBER = re.compile(rf"^\s+{_BDF}{_DESC}")
SYSFS = re.compile(rf"^/sys/kernel/iommu_groups/(?P<group>\d+)/devices/{_BDF}\s*$")
_CLASS = re.compile(r"\[([0-9a-fA-F]{4})\]:")
_IDS = re.compile(r"\[([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\]")


def _device(bdf: str, group: int, desc: str | None) -> ev.PciDevice:
    desc = desc or ""
    cls = _CLASS.search(desc)
    ids = _IDS.findall(desc)
    vendor, device = ids[-1] if ids else ("", "")
    return ev.PciDevice(bdf=normalise_bdf(bdf), iommu_group=group,
                        class_code=(cls.group(1).lower() + "00") if cls else "",
                        vendor=vendor.lower(), device=device.lower(),
                        role="vf" if "Virtual Function" in desc else "none")


def parse_iommu_groups(lines: Iterable[str], stats: FileStats | None = None) -> Iterator[ev.Event]:
    st = stats if stats is not None else FileStats("<iommu groups>")
    found: dict[str, ev.PciDevice] = {}
    group: int | None = None
    for raw in lines:
        st.lines += 1
        line = raw.rstrip("\r\n")[:MAX_LINE]
        if not line.strip():
            continue
        for rx in (ONE_LINE, SYSFS):
            m = rx.match(line)
            if m is not None:
                d = _device(m.group("bdf"), int(m.group("group")), m.groupdict().get("desc"))
                found[d.bdf] = d
                break
        else:
            b = BLOCK.match(line)
            if b is not None:
                group = int(b.group("group"))
                continue
            m = MEMBER.match(line)
            if m is not None and group is not None:
                d = _device(m.group("bdf"), group, m.group("desc"))
                found[d.bdf] = d
    if not found:
        return
    bridges = sorted(d.bdf for d in found.values() if d.class_code.startswith("06"))
    if bridges:
        st.note(f"bridges listed in IOMMU groups: {', '.join(bridges)} (they stay on the host; "
                "Kata skips them when it passes a group)")
    st.events += 1
    yield ev.InventoryObserved(ts_ns=0, source=SOURCE,
                               devices=tuple(found[b] for b in sorted(found)))


class _IommuGroupsImporter:
    name = "iommu-groups"
    description = "IOMMU group listing (lsiommu, `IOMMU Group N:` blocks, /sys/kernel/iommu_groups)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:100] if x.strip()]
        hits = 0
        block = False
        for x in lines:
            if ONE_LINE.match(x) or SYSFS.match(x):
                hits += 1
            elif BLOCK.match(x):
                hits, block = hits + 1, True
            elif block and MEMBER.match(x):
                hits += 1
        return hits >= 1 and hits * 3 >= len(lines)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        return Parsed(events=list(parse_iommu_groups(bounded_lines(lines, stats), stats)),
                      clock="static")


register(_IommuGroupsImporter())
