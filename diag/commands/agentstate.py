"""Provides the running agent's state as `status` and `findings` read it: its journal, and whether it still runs.

The agent's journal is the state it published: each part opens by restating the source health
and the active findings, then every transition follows, so the newest record of each finding
and each source in the live file is the agent's own current view (its thresholds, its
allow-lists: nothing is recomputed here). Whether the agent still runs is whether a process
holds the journal's lock (`<journal>.lock`, flock()ed for the agent's life): read from
/proc/locks, never by taking the lock, so asking can never make an agent that is starting
refuse its journal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diag import codec
from diag import events as ev
from diag.common.errors import DiagError, JournalFormatError
from diag.common.text import safe

DEFAULT_JOURNAL = "/var/lib/vfiowatch/journal.jsonl"
"""Where `vfiowatch run` (and the service) writes its journal when run as root."""

EXIT_OK, EXIT_PROBLEM, EXIT_ERROR, EXIT_NOT_RUNNING = 0, 1, 2, 3
"""Exit statuses of `status` and `findings` (like a monitoring plugin's OK, problem, error,
unknown): 3 when no agent holds the journal, so the state shown is the one it left."""

_WANTED = (b'{"kind":"header"', b'{"kind":"finding"', b'{"kind":"source_state_changed"',
           b'{"kind":"events_lost"')
"""The only records read: the rest of the journal (device events, links, ...) is skipped
unparsed, so a full 64 MB part is read in a fraction of a second."""


class NoJournal(DiagError):
    title = "No agent journal"


@dataclass(slots=True)
class AgentState:
    """What the agent writing `journal` last recorded, and whether it still runs."""

    journal: Path
    header: codec.Header | None = None
    pid: int | None = None
    """The process holding the journal's lock (the agent); None when no agent runs."""
    newest_ns: int | None = None
    """Time of the newest record read (findings, source health, losses)."""
    findings: dict[str, ev.Finding] = field(default_factory=dict)
    """finding_id -> its newest record in the live file, in the order they first appeared."""
    sources: dict[str, ev.SourceStateChanged] = field(default_factory=dict)
    """Source name -> its newest health record."""
    lost: int = 0
    """Events the agent recorded as lost in this file (sum of counts that were known)."""
    stats: codec.ReadStats = field(default_factory=codec.ReadStats)

    @property
    def running(self) -> bool:
        return self.pid is not None

    def active(self, min_severity: ev.Severity = ev.Severity.INFO) -> list[ev.Finding]:
        """Open findings at or above `min_severity`, most severe first, then oldest first."""
        out = [f for f in self.findings.values() if f.active and f.severity >= min_severity]
        return sorted(out, key=lambda f: (-f.severity.rank, f.first_ns, f.finding_id))

    def resolved(self) -> list[ev.Finding]:
        """Findings resolved within this file, newest first."""
        out = [f for f in self.findings.values() if not f.active]
        return sorted(out, key=lambda f: -(f.resolved_ns or f.ts_ns))

    def sources_down(self) -> list[ev.SourceStateChanged]:
        return [s for s in self.sources.values() if not s.up]


def _wanted(lines: Iterable[bytes]) -> Iterator[bytes]:
    for raw in lines:
        # Every record the codec writes starts with its kind; any other line is decoded in full.
        if raw.startswith(_WANTED) or not raw.startswith(b'{"kind":"'):
            yield raw


def read_state(journal: Path, *, locks: Path = Path("/proc/locks")) -> AgentState:
    """The state the agent recorded in `journal` (its live file) and whether it still runs.

    Raises NoJournal (naming the path and how to get one) when the file is missing or unreadable,
    JournalFormatError when it is not a vfiowatch journal.
    """
    st = AgentState(journal=journal)
    try:
        fh = journal.open("rb")
    except FileNotFoundError:
        raise NoJournal(
            f"{journal} does not exist: no agent has written a journal there",
            hint="start the agent (systemctl start vfiowatch), or pass --journal with the path "
                 "its `vfiowatch run --journal` writes") from None
    except OSError as exc:
        raise NoJournal(f"cannot read {journal}: {exc.strerror or exc}",
                        hint="run as root, or as a member of the journal directory's group") from None
    st.pid = lock_holder(journal, locks)
    with fh:
        for rec in codec.iter_records(_wanted(fh), st.stats):
            if isinstance(rec, codec.Header):
                st.header = st.header or rec
                continue
            st.newest_ns = max(st.newest_ns or 0, rec.ts_ns)
            if isinstance(rec, ev.Finding):
                st.findings[rec.finding_id] = rec
            elif isinstance(rec, ev.SourceStateChanged):
                st.sources[rec.name] = rec
            elif isinstance(rec, ev.EventsLost):
                st.lost += rec.count or 0
    if st.header is None:
        raise JournalFormatError(
            f"{journal} is not a vfiowatch journal (no header line in {st.stats.lines} lines)",
            hint="pass the file `vfiowatch run --journal PATH` writes (not a rotated .gz part)")
    return st


def lock_holder(journal: Path, locks: Path = Path("/proc/locks")) -> int | None:
    """The pid holding `<journal>.lock` (flock), from the kernel's lock table; None when none.

    Matched by the lock file's inode; when the file names a pid (the agent writes its own), the
    lock must be that pid's, so an inode reused on another file system cannot pass for it.
    """
    from diag.sinks.journal import lock_path

    path = lock_path(journal)
    try:
        ino = os.stat(path).st_ino
        named = path.read_text(errors="replace").split("\n", 1)[0].strip()
        table = locks.read_text()
    except OSError:
        return None
    for line in table.splitlines():
        # `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF`; waiters have `->` and no lock.
        f = line.split()
        if len(f) < 6 or "->" in f or f[1] != "FLOCK" or not f[4].isdigit():
            continue
        if f[5].rsplit(":", 1)[-1] != str(ino):
            continue
        if named.isdigit() and f[4] != named:
            continue
        return int(f[4])
    return None


# ---- presentation shared by both commands ----------------------------------------------------


def iso(ts_ns: int | None) -> str | None:
    if ts_ns is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ns / 1e9)) + f".{ts_ns // 1_000_000 % 1000:03d}Z"


def ago(ts_ns: int | None, now_ns: int) -> str:
    if ts_ns is None:
        return "never"
    s = max(0, (now_ns - ts_ns) // 1_000_000_000)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 2 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def agent_line(st: AgentState, now_ns: int) -> str:
    """`running, pid N` or `NOT RUNNING`, with what the header says about it."""
    h = st.header
    who = (f"vfiowatch {safe(h.agent_version)} on {safe(h.hostname or '?')}, started "
           f"{iso(h.started_ns)}") if h else "?"
    if st.running:
        return f"running, pid {st.pid} ({who})"
    return (f"NOT RUNNING: no process holds {safe(str(st.journal))}.lock; what follows is the "
            f"state it recorded last, {ago(st.newest_ns, now_ns)} ({who})")


def finding_json(f: ev.Finding) -> dict[str, Any]:
    """A finding as the journal writes it (the codec's record: every field, `kind` first)."""
    return codec.to_record(f)


def agent_json(st: AgentState) -> dict[str, Any]:
    h = st.header
    return {
        "running": st.running, "pid": st.pid,
        "agent_version": h.agent_version if h else None, "hostname": h.hostname if h else None,
        "started": iso(h.started_ns) if h else None, "boot_id": h.boot_id if h else None,
    }


def journal_json(st: AgentState) -> dict[str, Any]:
    return {"path": str(st.journal), "newest_record": iso(st.newest_ns),
            "bad_lines": st.stats.bad_lines, "truncated_tail": st.stats.truncated_tail}


def finding_columns(f: ev.Finding, now_ns: int) -> list[str]:
    """SEVERITY, RULE, DEVICE, POD, SINCE, SUMMARY of one finding (cells escaped)."""
    pod = f"{f.pod_namespace or '?'}/{f.pod}" if f.pod else (f.sandbox_id or "")[:12] or "-"
    when = ago(f.first_ns, now_ns) if f.active else f"resolved {ago(f.resolved_ns or f.ts_ns, now_ns)}"
    return [f.severity.label.upper(), safe(f.rule), safe(f.bdf or f.netdev or "-"), safe(pod),
            when, safe(f.summary, 160)]


FINDING_HEADER = ["SEVERITY", "RULE", "DEVICE", "POD", "SINCE", "SUMMARY"]


def columns(rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns (the last one not padded)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]
