"""Provides `vfiowatch findings`: the running agent's active findings, as it recorded them.

Reads the agent's journal (see `diag.commands.agentstate`) and lists the open findings, most
severe first: severity, rule, device, pod, since when, summary; with `--all`, the ones
resolved since the journal file began too. Table or JSON (each finding as the journal records
it); the exit status answers a script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from diag import events as ev
from diag.commands import Command, register
from diag.commands import agentstate as ag
from diag.common.text import safe

FINDINGS_SCHEMA = 1


def exit_status(st: ag.AgentState, min_severity: ev.Severity) -> int:
    """3 no agent runs; 1 a finding at `min_severity` or above is open; else 0."""
    if not st.running:
        return ag.EXIT_NOT_RUNNING
    return ag.EXIT_PROBLEM if st.active(min_severity) else ag.EXIT_OK


def findings_json(st: ag.AgentState, min_severity: ev.Severity, resolved: bool) -> dict[str, Any]:
    return {
        "schema": FINDINGS_SCHEMA, "kind": "vfiowatch_findings",
        "agent": ag.agent_json(st), "journal": ag.journal_json(st),
        "min_severity": min_severity.label,
        "active": [ag.finding_json(f) for f in st.active(min_severity)],
        "resolved": [ag.finding_json(f) for f in st.resolved()] if resolved else None,
        "exit_status": exit_status(st, min_severity),
    }


def findings_table(st: ag.AgentState, min_severity: ev.Severity, resolved: bool, now_ns: int) -> str:
    lines = []
    if not st.running:
        lines.append(f"agent {ag.agent_line(st, now_ns)}")
    active = st.active(min_severity)
    above = f" at {min_severity.label} or above" if min_severity > ev.Severity.INFO else ""
    lines.append(f"{len(active)} active finding{'' if len(active) == 1 else 's'}{above}")
    rows = [ag.finding_columns(f, now_ns) for f in active]
    lines += ag.columns([ag.FINDING_HEADER, *rows]) if rows else []
    for f in active:
        if f.remedy:
            lines.append(f"  what to do ({' '.join(safe(x) for x in (f.rule, f.bdf) if x)}): {safe(f.remedy)}")
    if resolved:
        done = st.resolved()
        lines += ["", f"{len(done)} resolved since {ag.iso(st.header.started_ns) if st.header else '?'}"
                  " (the journal file's start)"]
        lines += ag.columns([ag.FINDING_HEADER, *[ag.finding_columns(f, now_ns) for f in done]]) if done else []
    return "\n".join(lines)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--journal", type=Path, default=Path(ag.DEFAULT_JOURNAL), metavar="PATH",
                   help=f"the journal the agent writes (default {ag.DEFAULT_JOURNAL}, the "
                        "service's)")
    p.add_argument("--severity", choices=[s.label for s in ev.Severity], default="info",
                   help="only findings at this severity or above (default info: all)")
    p.add_argument("--all", action="store_true",
                   help="also the findings resolved since the journal file began")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table for people, json for machines (README 'Asking the running agent')")


def _run(args: argparse.Namespace) -> int:
    st = ag.read_state(args.journal)
    severity = ev.Severity.parse(args.severity)
    if args.format == "json":
        json.dump(findings_json(st, severity, args.all), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(findings_table(st, severity, args.all, time.time_ns()))
    return exit_status(st, severity)


register(Command(
    name="findings",
    help="ask the running agent: its active findings (--all: resolved ones too), table or JSON",
    description=(
        "Read the running agent's journal and list the findings it has open, most severe "
        "first (severity, rule, device, pod, since when, summary, and what to do), as the agent "
        "itself decided them: its thresholds and allow-lists, nothing recomputed. Exit status: "
        "0 none open at --severity or above, 1 some, 2 the journal cannot be read, 3 no agent "
        "runs (the findings shown are the ones it left)."
    ),
    arguments=_arguments,
    run=_run,
))
