"""Provides the importer of `journalctl -o json` exports: Kata (`SYSLOG_IDENTIFIER=kata`), containerd, kernel.

One JSON object per line with journald's fields. The Go shim's syslog lines carry logfmt in
`MESSAGE` (kata-facts §4.1); runtime-rs logs `MESSAGE` plus its fields as journald fields
(`NAME=kata-runtime`, `SOURCE=<sandbox id>`); containerd's unit repeats the shim's logfmt lines
and wraps returned errors in its own; the kernel's vfio-pci lines come with `_TRANSPORT=kernel`.
`MESSAGE` may be an array of bytes (journald's form for non-UTF-8 text). Entries that match a
signature become `LogLineMatched`; every entry's `__REALTIME_TIMESTAMP`, `__MONOTONIC_TIMESTAMP`
and `_BOOT_ID` are kept as clock anchors, which is how monotonic captures (udevadm) of the
same boot are put on the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from diag import codec
from diag import events as ev
from diag.importers import Anchor, FileStats, Parsed, register
from diag.importers.logfmt import match_record
from diag.sources.kata import logs

MAX_ANCHORS = 256
"""Clock anchors kept per boot (the first ones)."""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def entry_event(rec: dict[str, Any]) -> tuple[ev.LogLineMatched | None, int | None, str]:
    """One journald entry -> (event or None, realtime ns or None, why it is bad or '').

    Decoding is the Kata source's own (`diag.sources.kata.logs.decode_journal_entry`).
    """
    real = _int(rec.get("__REALTIME_TIMESTAMP"))
    if real is None:
        return None, None, "no __REALTIME_TIMESTAMP"
    ts = real * 1000
    lr = logs.decode_journal_entry(rec)
    if lr is None:
        return None, ts, ""
    return match_record(lr, ts), ts, ""


def parse_journald_json(
    lines: Iterable[str | bytes], stats: FileStats | None = None,
    anchors: list[Anchor] | None = None,
) -> Iterator[ev.Event]:
    """Decode `journalctl -o json` lines; signature matches become LogLineMatched events."""
    st = stats if stats is not None else FileStats("<journald>")
    per_boot: dict[str, int] = {}
    unmatched = 0
    for lineno, raw in enumerate(lines, 1):
        st.lines += 1
        if not raw.strip():
            continue
        try:
            rec = codec._loads(raw)
        except ValueError:
            if isinstance(raw, bytes) and not raw.endswith(b"\n"):
                st.truncated = True
                st.note("the last line was cut; it was skipped")
            else:
                st.bad(lineno, "not valid JSON", raw)
            continue
        if not isinstance(rec, dict):
            st.bad(lineno, "JSON line is not an object", raw)
            continue
        event, ts, why = entry_event(rec)
        if why:
            st.bad(lineno, why, raw)
            continue
        boot = rec.get("_BOOT_ID")
        mono = _int(rec.get("__MONOTONIC_TIMESTAMP"))
        if anchors is not None and isinstance(boot, str) and mono is not None and ts is not None:
            n = per_boot.get(boot, 0)
            if n < MAX_ANCHORS:
                per_boot[boot] = n + 1
                anchors.append(Anchor(boot, ts, mono * 1000))
        if event is None:
            unmatched += 1
            continue
        st.events += 1
        yield event
    if per_boot:
        st.boot_id = next(iter(per_boot)) if len(per_boot) == 1 else ""
        if len(per_boot) > 1:
            st.note(f"entries from {len(per_boot)} boots: " + ", ".join(sorted(per_boot)))
    if unmatched:
        st.note(f"{unmatched} entr{'y' if unmatched == 1 else 'ies'} matched no known "
                "Kata/QEMU/kernel signature")


class _JournaldImporter:
    name = "journald"
    description = "journalctl -o json export (Kata, containerd, kernel)"

    def sniff(self, head: list[str]) -> bool:
        for line in head[:20]:
            s = line.strip()
            if not s:
                continue
            if not s.startswith("{"):
                return False
            try:
                rec = codec._loads(s)
            except ValueError:
                return False
            return isinstance(rec, dict) and "__REALTIME_TIMESTAMP" in rec
        return False

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime", ordered=False)
        parsed.events = parse_journald_json(lines, stats, parsed.anchors)
        return parsed


register(_JournaldImporter())
