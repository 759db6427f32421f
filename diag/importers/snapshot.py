"""Provides the importer of `vfiowatch snapshot --format json` output: one static InventoryObserved,
and a KataFactsObserved per Kata handler it lists."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from diag import codec
from diag import events as ev
from diag.importers import FileStats, Parsed, read_whole, register

SOURCE = "sysfs"
KIND = "vfiowatch_snapshot"


def parse_snapshot(text: bytes | str, stats: FileStats | None = None) -> Iterator[ev.Event]:
    """Decode a snapshot document into one InventoryObserved and each Kata handler's facts (stamp 0:
    static)."""
    st = stats if stats is not None else FileStats("<snapshot>")
    try:
        doc: Any = codec.parse_json(text)
    except ValueError as exc:
        st.bad(1, f"not valid JSON ({exc})")
        return
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        st.bad(1, f"not a {KIND} document")
        return
    if isinstance(doc.get("schema"), int) and doc["schema"] > 1:
        st.note(f"snapshot schema {doc['schema']} is newer than this vfiowatch knows (1)")
    devices = []
    decode = codec.decode_value(ev.PciDevice)
    for i, rec in enumerate(doc.get("devices") or [], 1):
        try:
            if not isinstance(rec, dict):
                raise TypeError("not an object")
            devices.append(decode(rec))
        except (TypeError, ValueError) as exc:
            st.bad(i, f"device {i}: {exc}", str(rec)[:120])
    st.events += 1
    yield ev.InventoryObserved(ts_ns=0, source=SOURCE, devices=tuple(devices))
    facts = codec.decode_value(ev.KataHandlerFacts)
    for i, k in enumerate(doc.get("kata") or [], 1):
        try:
            if not isinstance(k, dict) or not isinstance(k.get("facts"), dict):
                raise TypeError("no facts object")
            e = ev.KataFactsObserved(ts_ns=0, source="kata", facts=facts(k["facts"]))
        except (TypeError, ValueError) as exc:
            st.bad(i, f"kata handler {i}: {exc}", str(k)[:120])
            continue
        st.events += 1
        yield e


class _SnapshotImporter:
    name = "snapshot"
    description = "vfiowatch snapshot --format json"

    def sniff(self, head: list[str]) -> bool:
        text = "\n".join(head[:12])
        return text.lstrip().startswith("{") and f'"kind": "{KIND}"' in text.replace('":"', '": "')

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        data = read_whole(lines, stats, "a snapshot")
        if data is None:
            return Parsed(events=[], clock="static")
        stats.lines = data.count(b"\n")
        return Parsed(events=list(parse_snapshot(data, stats)), clock="static")


register(_SnapshotImporter())
