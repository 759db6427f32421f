"""Provides the importer of `kubectl describe` output (pod, vmi, ...): its Events section.

Events are rows `Type  Reason  Age  From  Message` (aligned columns) or, pasted compactly,
`Warning FailedCreatePodSandBox 2s (x4 over 46s) kubelet, <message>`; a message a terminal
wrapped goes on, indented, on the next lines. `FailedCreatePodSandBox` and `SyncFailed`
messages carry Kata's, QEMU's and libvirt's errors, matched with the signature catalogue. Ages
are relative to when describe ran, which the output does not say: rows are put oldest first
and their time is unknown. The object's `Name:` and `Namespace:` name the pod.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from diag import events as ev
from diag.importers import FileStats, Parsed, register
from diag.importers.textlog import Emitter, bounded_lines
from diag.sources.kata import loglines
from diag.sources.kata.loglines import MAX_LINE

_AGE = r"(?:<unknown>|\d+[smhdy](?:\d+[smhd])?)(?: \(x\d+ over \S+\))?"
ROW = re.compile(rf"^\s*(?P<type>Normal|Warning)\s+(?P<reason>[A-Za-z][\w]*)\s+(?P<age>{_AGE})"
                 r"\s+(?P<rest>.*)$")
HEADER = re.compile(r"^\s*Type\s+Reason\s+Age\s+From\s+Message\s*$")
_FIELD = re.compile(r"^(Name|Namespace):\s+(\S+)\s*$")
_KEY = re.compile(r"^(?:\S+# kubectl describe .*|([A-Z][A-Za-z ]{1,30}):(?:\s.*)?)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 31536000}


@dataclass(slots=True)
class Row:
    type: str
    reason: str
    age_s: int
    message: str
    lineno: int


def age_seconds(age: str) -> int:
    """`3m18s (x3 over 11m)` -> 198 (the newest occurrence)."""
    total = 0
    for num, unit in re.findall(r"(\d+)([smhdy])", age.split(" (")[0]):
        total += int(num) * _UNIT[unit]
    return total


def _message(rest: str) -> str:
    """The Message column: after the From column (two spaces apart), or after `from, `."""
    parts = re.split(r"\s{2,}", rest.strip(), maxsplit=1)
    if len(parts) == 2:
        return parts[1]
    m = re.match(r"^[\w.-]+(?:,\s*[\w.-]*)?,?\s+(.*)$", rest)
    return m.group(1) if m else rest


def rows(lines: Iterable[str], st: FileStats) -> tuple[list[Row], dict[str, str]]:
    out: list[Row] = []
    meta: dict[str, str] = {}
    for lineno, raw in enumerate(lines, 1):
        st.lines += 1
        line = raw.rstrip("\r\n")[:MAX_LINE]
        m = ROW.match(line)
        if m is not None:
            out.append(Row(m.group("type"), m.group("reason"), age_seconds(m.group("age")),
                           _message(m.group("rest")), lineno))
            continue
        f = _FIELD.match(line)
        if f is not None and not out:
            meta.setdefault(f.group(1).lower(), f.group(2))
            continue
        if out and line.strip() and not HEADER.match(line) and not line.strip().startswith(
                ("----", "```", "Events:")):
            # A wrapped message: the terminal broke the row; the text goes on.
            cont = line.strip()
            out[-1].message += (" " if not out[-1].message.endswith(" ") else "") + cont
    return out, meta


def parse_describe(lines: Iterable[str], stats: FileStats | None = None,
                   parsed: Parsed | None = None) -> Iterator[ev.Event]:
    st = stats if stats is not None else FileStats("<describe>")
    out = parsed if parsed is not None else Parsed(events=(), clock="none", ordered=True)
    found, meta = rows(lines, st)
    if meta.get("name"):
        st.note(f"kubectl describe of {meta.get('namespace', '?')}/{meta['name']}")
    if found:
        st.note(f"{len(found)} event row(s); ages are relative to when describe ran (not in "
                "the output): put oldest first, time unknown")
    emit = Emitter(st, out)
    for r in sorted(found, key=lambda r: (-r.age_s, r.lineno)):
        rec = loglines.LogRecord(message=r.message, level="error" if r.type == "Warning" else "info",
                             fields={"reason": r.reason}, origin=f"kubectl-describe:{r.reason}")
        yield from emit.emit(rec, None)
    yield from emit.finish("event row")


class _DescribeImporter:
    name = "kubectl-describe"
    description = "kubectl describe output (Events: FailedCreatePodSandBox, SyncFailed ...)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:400] if x.strip()]
        if any(HEADER.match(x) for x in lines):
            return True
        if bool(lines) and sum(bool(ROW.match(x)) for x in lines) * 3 >= len(lines):
            return True
        # The object part of a describe (no Events yet): its fields at the left margin.
        keys = {m.group(1) for x in lines[:60] if (m := _KEY.match(x))}
        return {"Name", "Namespace"} <= keys and bool(keys & {"Containers", "Conditions",
                                                               "Status", "Events"})

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="none", ordered=True)
        parsed.events = parse_describe(bounded_lines(lines, stats), stats, parsed)
        return parsed


register(_DescribeImporter())
