"""Provides the importer of `lspci -nnk` listings (with `-D`, and the `-vvv` parts it can use).

A device record opens with `[<domain>:]<bus>:<dev>.<fn> <class> [<cccc>]: <vendor> <device>
[<vvvv>:<dddd>]` and continues with indented lines; the ones used are `Kernel driver in use:`,
`Kernel modules:`, `IOMMU group:`, `NUMA node:` and, under the SR-IOV capability, `Initial VFs:
.., Total VFs: .., Number of VFs: ..` and `VF offset: .., stride: ..`, from which the VFs' own
addresses follow (routing id = PF's + offset + index x stride). The result is one
`InventoryObserved` with no time of its own (a `static` input).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace

from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line, register, text_lines

SOURCE = "lspci"
_REC = re.compile(
    r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])\s+(.*)$"
)
_CLASS = re.compile(r"\[([0-9a-fA-F]{4})\]:")
_IDS = re.compile(r"\[([0-9a-fA-F]{4}):([0-9a-fA-F]{4})\](?:\s*\(rev [0-9a-fA-F]+\))?\s*$")
_SRIOV = re.compile(r"Total VFs:\s*(\d+),\s*Number of VFs:\s*(\d+)")
_VFOFF = re.compile(r"VF offset:\s*(\d+),\s*stride:\s*(\d+)")
_FLAGS_GROUP = re.compile(r"\bIOMMU group (\d+)\b")
_PROMPT = re.compile(r"^(?:\S*[$#➜>%]\s|\[\S+@\S+[^\]]*\][$#]|[\w.-]+@[\w.-]+:\S*[$#]\s?)")
"""A shell prompt and the command pasted above a listing (`➜ lspci -k | grep Eth -A3`)."""


def _bdf(dom: str | None, bus: str, dev: str, fn: str) -> str:
    return f"{(dom or '0000').lower()}:{bus.lower()}:{dev.lower()}.{fn}"


def _rid(bdf: str) -> tuple[str, int]:
    dom, bus, rest = bdf.split(":")
    dev, fn = rest.split(".")
    return dom, (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn)


def _from_rid(dom: str, rid: int) -> str:
    return f"{dom}:{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


def parse_lspci(lines: Iterable[str], stats: FileStats | None = None) -> Iterator[ev.Event]:
    """Decode an lspci listing into one InventoryObserved (stamp 0: static)."""
    st = stats if stats is not None else FileStats("<lspci>")
    devices: list[ev.PciDevice] = []
    offsets: dict[str, tuple[int, int]] = {}
    """PF -> (first VF offset, stride), from `-vvv`'s SR-IOV capability."""
    cur: ev.PciDevice | None = None
    fields: dict[str, object] = {}
    for lineno, line in text_lines(lines, st):
        if line[0] not in " \t":
            m = _REC.match(line)
            if not m:
                if line.startswith("lspci:"):
                    continue  # lspci's own warnings (libkmod) on stderr captured with 2>&1
                if _PROMPT.match(line) and not devices and cur is None:
                    st.note(f"line {lineno} is the command that made the listing: skipped")
                    continue
                st.bad(lineno, "not an lspci device line", line)
                continue
            if cur is not None:
                devices.append(replace(cur, **fields))  # type: ignore[arg-type]
            cur, fields = _device(m), {}
        elif cur is None:
            st.bad(lineno, "indented line before any device", line)
        else:
            _detail(line.strip(), fields, offsets, cur.bdf)
    if cur is not None:
        devices.append(replace(cur, **fields))  # type: ignore[arg-type]
    by_bdf = _with_vfs({d.bdf: d for d in devices}, offsets)
    if not by_bdf:
        return
    if not any(d.driver for d in by_bdf.values()):
        st.note("no `Kernel driver in use` lines: was lspci run without -k?")
    st.events += 1
    yield ev.InventoryObserved(ts_ns=0, source=SOURCE, devices=tuple(by_bdf[b] for b in sorted(by_bdf)))


def _device(m: re.Match[str]) -> ev.PciDevice:
    """A device line: `[dddd:]bb:dd.f Class [cccc]: Vendor Device [vvvv:dddd] (rev nn)`."""
    dom, bus, dev, fn, rest = m.groups()
    cls = _CLASS.search(rest)
    ids = _IDS.search(rest)
    return ev.PciDevice(
        bdf=_bdf(dom, bus, dev, fn),
        vendor=ids.group(1).lower() if ids else "",
        device=ids.group(2).lower() if ids else "",
        class_code=(cls.group(1).lower() + "00") if cls else "",
        # Without -vvv no SR-IOV capability names the VFs; their own name does.
        role="vf" if "Virtual Function" in rest else "none",
    )


def _detail(s: str, fields: dict[str, object], offsets: dict[str, tuple[int, int]],
            bdf: str) -> None:
    """An indented line of the device `bdf`: driver and modules (-k), IOMMU group (also in
    `-v`'s `Flags:`), NUMA node, SR-IOV."""
    key, _, val = s.partition(":")
    val = val.strip()
    if key == "Kernel driver in use":
        fields["driver"] = val or None
    elif key == "Kernel modules":
        fields["modules"] = tuple(x.strip() for x in val.split(",") if x.strip())
    elif key == "Flags" and (g := _FLAGS_GROUP.search(val)) is not None:
        fields["iommu_group"] = int(g.group(1))
    elif key == "IOMMU group" and val.isdigit():
        fields["iommu_group"] = int(val)
    elif key == "NUMA node" and val.lstrip("-").isdigit():
        fields["numa_node"] = int(val) if int(val) >= 0 else None
    elif (m2 := _SRIOV.search(s)) is not None:
        fields["sriov_totalvfs"] = int(m2.group(1))
        fields["sriov_numvfs"] = int(m2.group(2))
        fields["role"] = "pf"
    elif (m3 := _VFOFF.search(s)) is not None:
        offsets[bdf] = (int(m3.group(1)), int(m3.group(2)))


def _with_vfs(by_bdf: dict[str, ev.PciDevice],
              offsets: dict[str, tuple[int, int]]) -> dict[str, ev.PciDevice]:
    """Each PF's VFs (from its VF offset and stride) named, and each VF its PF and index."""
    for pf, (off, stride) in offsets.items():
        d = by_bdf.get(pf)
        if d is None or not d.sriov_numvfs:
            continue
        dom, rid = _rid(pf)
        vfs = []
        for i in range(d.sriov_numvfs):
            vf = _from_rid(dom, rid + off + i * stride)
            vfs.append(vf)
            if vf in by_bdf:
                by_bdf[vf] = replace(by_bdf[vf], role="vf", pf=pf, vf_index=i)
        by_bdf[pf] = replace(by_bdf[pf], vfs=tuple(vfs))
    return by_bdf


class _LspciImporter:
    name = "lspci"
    description = "lspci -nnk listing (-D, -vvv)"

    def sniff(self, head: list[str]) -> bool:
        recs = 0
        for line in head[:200]:
            if not line.strip() or line[0] in " \t" or line.startswith("lspci:"):
                continue
            if not _REC.match(line):
                if recs == 0 and _PROMPT.match(line):
                    continue  # the command pasted above the listing
                return False
            recs += 1
        return recs > 0

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        return Parsed(events=parse_lspci((decode_line(b) for b in lines), stats), clock="static")


register(_LspciImporter())
