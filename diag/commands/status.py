"""Provides `vfiowatch status`: is the agent running, are its sources up, what is open now.

Reads the running agent's journal (see `diag.commands.agentstate`): the agent, its sources'
health with the reason and fix of each one down, and a count of the active findings by
severity. Table or JSON; the exit status answers a script or a monitoring check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from diag import events as ev
from diag.commands import Command, register
from diag.commands import agentstate as ag
from diag.common.text import safe

STATUS_SCHEMA = 1


def exit_status(st: ag.AgentState) -> int:
    """3 no agent runs; 1 a source is down or a finding at warning or above is open; else 0."""
    if not st.running:
        return ag.EXIT_NOT_RUNNING
    if st.sources_down() or st.active(ev.Severity.WARNING):
        return ag.EXIT_PROBLEM
    return ag.EXIT_OK


def _counts(st: ag.AgentState) -> dict[str, int]:
    c = Counter(f.severity for f in st.active())
    return {s.label: c.get(s, 0) for s in sorted(ev.Severity, reverse=True)}


def status_json(st: ag.AgentState) -> dict[str, Any]:
    return {
        "schema": STATUS_SCHEMA, "kind": "vfiowatch_status",
        "agent": ag.agent_json(st), "journal": ag.journal_json(st),
        "sources": [{"name": s.name, "up": s.up, "mode": s.mode, "reason": s.reason,
                     "hint": s.hint, "since": ag.iso(s.ts_ns)}
                    for s in sorted(st.sources.values(), key=lambda s: s.name)],
        "active_findings": _counts(st),
        "events_lost": st.lost,
        "exit_status": exit_status(st),
    }


def status_table(st: ag.AgentState, now_ns: int) -> str:
    lines = [f"agent     {ag.agent_line(st, now_ns)}",
             f"journal   {safe(str(st.journal))}, newest record {ag.iso(st.newest_ns) or 'none'} "
             f"({ag.ago(st.newest_ns, now_ns)})"]
    if st.stats.bad_lines or st.stats.truncated_tail:
        lines.append(f"          ! {st.stats.bad_lines} damaged lines"
                     + (", the last line cut" if st.stats.truncated_tail else "")
                     + (f" ({safe(st.stats.first_bad)})" if st.stats.first_bad else ""))
    down = st.sources_down()
    lines.append(f"sources   {len(st.sources) - len(down)} up, {len(down)} down")
    rows = []
    for s in sorted(st.sources.values(), key=lambda s: s.name):
        why = s.reason + (f"; fix: {s.hint}" if s.hint and not s.up else "")
        rows.append(["✓" if s.up else "✗", safe(s.name), safe(s.mode or "-"), safe(why or "-", 200)])
    lines += ag.columns(rows, indent="  ")
    active = st.active()
    counts = ", ".join(f"{n} {label}" for label, n in _counts(st).items() if n)
    lines.append(f"findings  {len(active)} active" + (f": {counts}" if counts else "")
                 + ("  (vfiowatch findings lists them)" if active else ""))
    if st.lost:
        lines.append(f"lost      {st.lost} events recorded as lost in this journal file")
    return "\n".join(lines)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--journal", type=Path, default=Path(ag.DEFAULT_JOURNAL), metavar="PATH",
                   help=f"the journal the agent writes (default {ag.DEFAULT_JOURNAL}, the "
                        "service's)")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table for people, json for machines (README 'Asking the running agent')")


def _run(args: argparse.Namespace) -> int:
    st = ag.read_state(args.journal)
    if args.format == "json":
        json.dump(status_json(st), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(status_table(st, time.time_ns()))
    return exit_status(st)


register(Command(
    name="status",
    help="ask the running agent: running or not, its sources' health, active findings by severity",
    description=(
        "Read the running agent's journal and say whether the agent runs (a process holds the "
        "journal's lock), the health of each of its sources (with the reason and fix of each "
        "one down), and how many findings are open by severity. Exit status: 0 all well, 1 a "
        "source is down or a finding at warning or above is open, 2 the journal cannot be "
        "read, 3 no agent runs (the state shown is the one it left)."
    ),
    arguments=_arguments,
    run=_run,
))
