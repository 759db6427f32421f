"""Provides the postmortem's report as text (a terminal), JSON (machines) and Markdown (a ticket).

Text escapes every outside string with `diag.common.text.safe`; JSON carries the findings and
the timeline's events in the journal's schema with the live rule ids; Markdown is for pasting
into a ticket, like kata-collect-data. Each event's words are its renderer's
(`diag.render.timeline`).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import Any

from diag import codec, render
from diag import events as ev
from diag.common.text import safe
from diag.postmortem.inputs import Input
from diag.postmortem.report import BOOT_RELATIVE_NS, Filter, Report

SCHEMA = 1
KIND = "vfiowatch_postmortem"


# --------------------------------------------------------------------------------------------
# Times and inputs
# --------------------------------------------------------------------------------------------


def fmt_time(ts: int, *, date: bool = False) -> str:
    if 0 <= ts < BOOT_RELATIVE_NS:
        return f"boot+{ts / 1e9:.6f}s"
    dt = datetime.fromtimestamp(ts // 1_000_000_000, UTC)
    frac = f"{ts % 1_000_000_000 // 1000:06d}"
    return dt.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S") + "." + frac


def _input_label(report: Report, idx: int) -> str:
    if idx < 0:
        return "replay"
    return os.path.basename(report.inputs[idx].path)


def _place(inp: Input) -> str:
    a = inp.alignment
    st = inp.stats
    if st.clock == "static":
        return "static (state listing, no time)"
    if a is None:
        return st.clock
    if a.uncertainty_ns is None:
        return f"{st.clock}, NOT aligned"
    return f"{st.clock}, aligned ±{a.uncertainty_ns / 1e6:.1f} ms"


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _headline(report: Report) -> str:
    n_in = len(report.inputs)
    span = ""
    if report.untimed_only:
        span = ", no input has times"
    elif report.first_ns is not None and report.last_ns is not None:
        span = (f", {fmt_time(report.first_ns, date=True)} → {fmt_time(report.last_ns)}"
                + (" UTC" if report.first_ns >= BOOT_RELATIVE_NS else "")
                + f" ({(report.last_ns - report.first_ns) / 1e9:.1f} s)")
    return (f"vfiowatch postmortem: {n_in} input{'s' if n_in != 1 else ''}, "
            f"{report.events_total:,} events{span}")


def _input_lines(report: Report) -> list[str]:
    out = []
    for inp in report.inputs:
        st = inp.stats
        mark = "✗" if st.error or st.format == "unrecognised" else (
            "!" if st.bad_lines or st.truncated or st.format == "text" else "✓")
        if st.error:
            detail = f"could not be read: {st.error}"
        elif st.format == "unrecognised":
            detail = "unrecognised format (not read)"
        elif st.format == "duplicate":
            detail = "(duplicate)"
        elif st.format == "empty":
            detail = "empty: nothing was captured"
        else:
            detail = f"{st.lines:,} lines, {st.events:,} events, {_place(inp)}"
        fmt = "text (signatures only)" if st.format == "text" else st.format
        out.append(f"  {mark} {safe(inp.path)}  [{fmt}]  {safe(detail)}")
        if st.bad_lines:
            out.append(f"      {st.bad_lines} malformed line(s) skipped; first: {safe(st.first_bad, 200)}")
        if st.truncated and not any("cut" in n for n in st.notes):
            out.append("      truncated: the file ended early")
        out.extend(f"      {safe(n)}" for n in st.notes)
    return out


def _finding_lines(f: ev.Finding, *, indent: str = "  ",
                   inputs: list[str] | None = None, untimed: bool = False) -> list[str]:
    """A finding as text: what and where, when (or that no input has times), the actor, the
    inputs it rests on, what was inferred, its evidence, why and the fix."""
    where = " ".join(x for x in (f.bdf or "", f"netdev={f.netdev}" if f.netdev else "",
                                 f"sandbox={f.sandbox_id[:12]}" if f.sandbox_id else "",
                                 f"pod={f.pod_namespace}/{f.pod}" if f.pod else "") if x)
    out = [f"{indent}{f.severity.label.upper():8} {safe(f.rule)}  {safe(where)}  [{f.status}]",
           f"{indent}  {safe(f.summary)}",
           (f"{indent}  time unknown (no input has times)" if untimed else
            f"{indent}  first {fmt_time(f.first_ns, date=True)}, last {fmt_time(f.last_ns)}")
           + (f", resolved {fmt_time(f.resolved_ns) if not untimed else ''}: "
              f"{safe(f.resolved_reason)}" if f.resolved_ns is not None else "")]
    if f.actor is not None:
        out.append(f"{indent}  actor: {safe(f.actor.comm)}[{f.actor.pid}]"
                       + (f" {safe(f.actor.exe)}" if f.actor.exe else ""))
    if inputs:
        out.append(f"{indent}  rests on: {safe(', '.join(os.path.basename(x) for x in inputs))}")
    inferred = dict(f.labels).get("inferred")
    if inferred:
        out.append(f"{indent}  inferred: {safe(inferred)}")
    for e in f.evidence:
        when = "(time unknown)" if untimed else fmt_time(e.ts_ns)
        out.append(f"{indent}  - {when} {safe(e.source)}: {safe(e.text, 200)}")
    if f.explanation:
        out.append(f"{indent}  why: {safe(f.explanation)}")
    if f.remedy:
        out.append(f"{indent}  fix: {safe(f.remedy)}")
    return out


def _shown_findings(report: Report) -> list[ev.Finding]:
    flt = report.filter or Filter(report.options)
    if flt.by_sandbox:
        flt.sandbox_bdfs |= {d.device.bdf for d in (report.state.devices if report.state else ())
                             if flt.is_mine(d.sandbox_id)}
    return sorted((f for f in report.findings if flt.shows_finding(f)),
                  key=lambda f: (-f.severity.rank, f.first_ns))


def _evicted_note(report: Report) -> str:
    book = report.book
    if book is None or not book.evicted:
        return ""
    per = ", ".join(f"{r} {s}: {n}" for (r, s), n in sorted(book.by_rule.items()))
    return (f"; {book.total:,} raised in all, the oldest {book.evicted:,} resolved ones not "
            f"shown ({per})")


def _n_entries(n: int) -> str:
    return f"{n:,} entr{'y' if n == 1 else 'ies'}"


def _problems(report: Report) -> list[str]:
    """The inputs not read whole, said first (exit status 2), with what was read instead."""
    out = []
    for inp in report.unreadable:
        out.append(f"{inp.path}: could not be read: {inp.stats.error}")
    for inp in report.not_fully_read:
        st = inp.stats
        if st.format == "unrecognised":
            out.append(f"{inp.path}: not recognised, not read")
        elif st.format == "text":
            out.append(f"{inp.path}: not a known artifact: only searched line by line for known "
                       f"failures (text, signatures only): {st.events} found")
        else:
            why = "cut short" if st.truncated else f"{st.bad_lines} malformed line(s) skipped"
            out.append(f"{inp.path}: read as {st.format}, partly: {why}")
    return out


def render_text(report: Report) -> str:
    lines = [_headline(report)]
    problems = _problems(report)
    if problems:
        lines += ["", "Not read whole (exit status 2)"] + [f"  ! {safe(x)}" for x in problems]
    if report.unmatched:
        lines += ["", "Filter matches nothing (exit status 2)", f"  ! {safe(report.unmatched)}"]
    lines += ["", "Inputs"]
    lines += _input_lines(report)
    if report.clock_notes:
        lines += ["", "Clocks"]
        lines += [f"  - {safe(n)}" for n in report.clock_notes]
    findings = _shown_findings(report)
    lines += ["", f"Findings ({len(findings)})" + _evicted_note(report)]
    if not findings:
        lines.append("  none")
    for f in findings:
        lines += _finding_lines(f, inputs=report.finding_inputs.get(f.finding_id),
                                untimed=report.untimed_only)
        lines.append("")
    match = report.replay_matches_recording
    if match is not None:
        lines.append("  replayed findings " + ("match" if match else "DIFFER FROM")
                     + " the findings recorded in the agent's journal")
    shown = len(report.timeline)
    lines += ["", f"Timeline ({shown:,} of {report.timeline_total:,} entries"
              + ("; ~ = stamp uncertain, ? = order uncertain: against the neighbouring input, "
                 "or recorded after a later event)"
                 if any(e.uncertainty_ns or e.order_uncertain for e in report.timeline) else ")")]
    width = max((len(_input_label(report, e.input)) for e in report.timeline), default=6)
    day = None
    prev = 0
    for e in report.timeline:
        if e.seq > prev + 1:
            lines.append(f"  … {_n_entries(e.seq - prev - 1)} not shown")
        prev = e.seq
        if e.ts_ns >= BOOT_RELATIVE_NS and not e.static:
            d = fmt_time(e.ts_ns, date=True)[:10]
            if d != day:
                lines.append(f"  -- {d} (UTC)")
                day = d
        mark = ("?" if e.order_uncertain else " ") + ("~" if e.uncertainty_ns else " ")
        when = "(no time)" if e.static else "(time unknown)" if (
            e.uncertainty_ns < 0 or report.untimed_only) else fmt_time(e.ts_ns)
        lines.append(f"  {when:>17}{mark} {safe(_input_label(report, e.input)):<{width}}  "
                     f"{safe(render.timeline(e.event), 240)}")
    if report.timeline_total > prev:
        lines.append(f"  … {report.timeline_total - prev:,} more")
    if report.timeline_total > shown:
        lines.append(f"  ({report.timeline_total - shown:,} entries not shown: the start, each "
                     "finding with its context and the end are; narrow with --device, --sandbox, "
                     "--since/--until or raise --limit)")
    lines += ["", _verdict(report)]
    return "\n".join(lines) + "\n"


def _verdict(report: Report) -> str:
    code = report.exit_status
    worst = report.worst
    about = f" about {report.filter.asked()}" if report.filter and report.filter.asked() else ""
    if code == 2:
        n = len(report.unreadable) + len(report.not_fully_read)
        tail = f"; findings{about} up to {worst.label}" if worst else ""
        if not n:
            return f"exit 2: {report.filter.asked() if report.filter else 'the filter'} matches nothing in the inputs (see the top)"
        return f"exit 2: {n} input(s) not read whole (see the top){tail}"
    if code == 1:
        return f"exit 1: findings{about} up to {worst.label if worst else '?'}"
    return f"exit 0: no finding{about} reached warning"


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def report_json(report: Report) -> dict[str, Any]:
    """The report as a JSON-ready dict (findings and events in the journal's schema)."""
    return {
        "schema": SCHEMA,
        "kind": KIND,
        "exit_status": report.exit_status,
        "first_ns": report.first_ns,
        "last_ns": report.last_ns,
        "events_total": report.events_total,
        "inputs": [
            {
                "path": i.path, "format": i.stats.format, "clock": i.stats.clock,
                "lines": i.stats.lines, "events": i.stats.events,
                "bad_lines": i.stats.bad_lines, "first_bad": i.stats.first_bad,
                "truncated": i.stats.truncated, "error": i.stats.error, "notes": i.stats.notes,
                "boot_id": i.stats.boot_id,
                "alignment": None if i.alignment is None else {
                    "offset_ns": i.alignment.offset_ns,
                    "uncertainty_ns": i.alignment.uncertainty_ns,
                    "method": i.alignment.method, "support": i.alignment.support,
                },
            }
            for i in report.inputs
        ],
        "clock_notes": report.clock_notes,
        "not_read_whole": _problems(report),
        "filter_matches_nothing": report.unmatched or None,
        "end_ns": report.end_ns,
        "findings": [{**codec.to_record(f), "inputs": report.finding_inputs.get(f.finding_id, [])}
                     for f in _shown_findings(report)],
        "findings_total": report.book.total if report.book else len(report.findings),
        "findings_not_kept": report.book.evicted if report.book else 0,
        "findings_by_rule": [
            {"rule": r, "severity": s, "count": n}
            for (r, s), n in sorted((report.book.by_rule if report.book else {}).items())
        ],
        "replay_matches_recording": report.replay_matches_recording,
        "timeline_total": report.timeline_total,
        "timeline": [
            {"seq": e.seq, "ts_ns": e.ts_ns,
             "input": None if e.input < 0 else report.inputs[e.input].path,
             "uncertainty_ns": e.uncertainty_ns, "order_uncertain": e.order_uncertain,
             "event": codec.to_record(e.event)}
            for e in report.timeline
        ],
    }


def render_json(report: Report) -> str:
    return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _md(text: object) -> str:
    """Escaped for a Markdown table cell or paragraph (controls, pipes, markup)."""
    s = safe(text)
    return re.sub(r"([\\`*_{}\[\]<>|#])", r"\\\1", s)


def _fence(body: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    f = "`" * max(3, longest + 1)
    return f"{f}\n{body}\n{f}"


def render_markdown(report: Report) -> str:
    out = ["# vfiowatch postmortem report", "", _md(_headline(report)), "",
           f"**Result:** {_md(_verdict(report))}", ""]
    if report.unmatched:
        out += [f"**Filter matches nothing:** {_md(report.unmatched)}", ""]
    findings = _shown_findings(report)
    out += ["## Findings", ""]
    if not findings:
        out += ["No findings.", ""]
    else:
        out += ["| Severity | Rule | Device | Sandbox | Status | First seen | Summary |",
                "|---|---|---|---|---|---|---|"]
        for f in findings:
            out.append(f"| {f.severity.label} | `{safe(f.rule)}` | {_md(f.bdf or '')} | "
                       f"{_md((f.sandbox_id or '')[:12])} | {f.status} | "
                       f"{fmt_time(f.first_ns, date=True)} | {_md(f.summary)} |")
        out.append("")
        for f in findings:
            out += [f"### {f.severity.label.upper()} `{safe(f.rule)}` {_md(f.bdf or '')}", "",
                    _md(f.summary), ""]
            if f.explanation:
                out += [f"**Why:** {_md(f.explanation)}", ""]
            if f.remedy:
                out += [f"**Fix:** {_md(f.remedy)}", ""]
            if f.evidence:
                body = "\n".join(f"{fmt_time(e.ts_ns, date=True)} {safe(e.source)}: {safe(e.text)}"
                                 for e in f.evidence)
                out += ["Evidence:", "", _fence(body), ""]
    out += ["## Inputs", "", "| File | Format | Clock | Lines | Events | Problems |",
            "|---|---|---|---|---|---|"]
    for inp in report.inputs:
        st = inp.stats
        probs = "; ".join(x for x in (
            st.error, f"{st.bad_lines} malformed (first: {st.first_bad})" if st.bad_lines else "",
            "truncated" if st.truncated else "", *st.notes) if x)
        out.append(f"| {_md(inp.path)} | {st.format} | {_md(_place(inp))} | {st.lines} | "
                   f"{st.events} | {_md(probs)} |")
    out.append("")
    if report.clock_notes:
        out += ["## Clock alignment", ""] + [f"- {_md(n)}" for n in report.clock_notes] + [""]
    rows = []
    prev = 0
    for e in report.timeline:
        if e.seq > prev + 1:
            rows.append(f"… {_n_entries(e.seq - prev - 1)} not shown")
        prev = e.seq
        rows.append(
            f"{'(no time)' if e.static else fmt_time(e.ts_ns, date=True)}"
            f"{'?' if e.order_uncertain else ' '}{'~' if e.uncertainty_ns else ' '} "
            f"{safe(_input_label(report, e.input))}: {safe(render.timeline(e.event), 240)}")
    if report.timeline_total > prev:
        rows.append(f"… {report.timeline_total - prev} more")
    body = "\n".join(rows)
    more = (f"\n\n{report.timeline_total - len(report.timeline)} entries not shown (the start, "
            "each finding with its context and the end are)."
            if report.timeline_total > len(report.timeline) else "")
    out += ["## Timeline", "", "<details><summary>"
            f"{len(report.timeline)} of {report.timeline_total} entries (UTC; ~ stamp uncertain, "
            "? order uncertain)</summary>", "", _fence(body) + more, "", "</details>", ""]
    return "\n".join(out)
