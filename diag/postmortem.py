"""Provides `vfiowatch postmortem`: recorded journals and operators' artifacts -> timeline and findings.

The command is thin: `diag.importers.postmortem` reads, aligns and replays through the live
Correlator; this module parses the options and renders the report as text (a terminal, every
outside string escaped with `diag.text.safe`), JSON (findings in the journal's schema with the
live rule ids, plus the timeline) or Markdown (to paste into a ticket, like kata-collect-data).
Exit status: 0 when no finding reaches warning, 1 when one does, 2 when an input could not be
read (the report is still printed).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from diag import codec
from diag import events as ev
from diag.cli import command
from diag.errors import ConfigError, DiagError
from diag.importers import postmortem as pm
from diag.text import safe

SCHEMA = 1
KIND = "vfiowatch_postmortem"


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|UTC|[+-]\d{2}:?\d{2})?$"
)


def _seconds_ns(text: str) -> int | None:
    """Decimal seconds to integer nanoseconds, exactly (no float rounding at epoch scale)."""
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    return int(d * 1_000_000_000)


def parse_when(text: str) -> int:
    """ISO 8601 (UTC unless an offset is given) or epoch seconds -> epoch nanoseconds."""
    s = text.strip()
    ns = _seconds_ns(s)
    if ns is not None:
        return ns
    m = _ISO.match(s)
    if not m:
        raise ValueError(f"not a time: {text!r} (use 2026-11-27T14:52:48Z or epoch seconds)")
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0), 0, 0, 0))
    if tz and tz not in ("Z", "UTC"):
        sign = -1 if tz[0] == "+" else 1
        z = tz[1:].replace(":", "")
        secs += sign * (int(z[:2]) * 3600 + int(z[2:]) * 60)
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


def parse_offset(text: str) -> tuple[str, int]:
    """`SECONDS`, `@BOOT-TIME`, `PATH=SECONDS` or `PATH=@BOOT-TIME` -> (path or '*', ns)."""
    path, sep, value = text.rpartition("=")
    if not sep:
        path, value = "*", text
    value = value.strip()
    if value.startswith("@"):
        return path or "*", parse_when(value[1:])
    ns = _seconds_ns(value)
    if ns is None:
        raise ValueError(f"bad --offset {text!r}: use SECONDS, @BOOT-TIME, PATH=SECONDS or "
                         "PATH=@BOOT-TIME")
    return path or "*", ns


@command
def _add_postmortem(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "postmortem",
        help="timeline and findings from recorded journals and operators' captures",
        description=(
            "Read any mix of files or directories (plain or .gz; the format is recognised by "
            "content; kata-collect-data reports, sosreports and must-gathers are walked): the "
            "agent's journal, journalctl text (short, -precise, -iso, -monotonic) and "
            "-o json/export, containerd/Kata logfmt logs, klog (kubelet), kubectl describe "
            "Events, dmesg and dmesg -T, udevadm monitor, ip monitor, lspci (with or without "
            "-D), IOMMU group listings, ps aux/-ef, crictl, Kata configuration files (or pasted "
            "parts), persist.json/state.json, snapshots; any other text is searched line by "
            "line for known failures. Kata's own write lines count as the writes. Put them on "
            "one timeline (saying how sure the order is) and replay them through the same "
            "engine as the live agent. A listing can be given as PATH@end or PATH@TIME (when it "
            "was taken). Exit status 0: no finding reached warning; 1: one did; 2: an input "
            "was not read whole (named first)."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files or directories; PATH@end or PATH@TIME says when a listing was "
                        "taken")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="text for a terminal, json for machines (findings in the journal's "
                        "schema), markdown to paste into a ticket")
    p.add_argument("--device", metavar="BDF", help="only this PCI device (0000:01:10.0)")
    p.add_argument("--sandbox", metavar="ID",
                   help="only this Kata sandbox (its id, or the 12-character prefix the reports "
                        "show) and its devices")
    p.add_argument("--since", metavar="TIME", help="show from this time (ISO 8601 UTC or epoch s)")
    p.add_argument("--until", metavar="TIME",
                   help="stop the replay at this time; for captures without ticks, time is "
                        "advanced to it so grace periods can expire")
    p.add_argument("--offset", action="append", default=[], metavar="[PATH=]SECONDS|@BOOT",
                   help="wall-clock = monotonic + SECONDS for monotonic captures (udevadm); "
                        "@TIME gives the boot time instead (`uptime -s`); repeat per file")
    p.add_argument("--limit", type=int, default=2000, metavar="N",
                   help="timeline entries to show (default 2000); every active finding and the "
                        "newest 1000 resolved ones are shown, with totals for all")
    p.add_argument("--config", metavar="TOML",
                   help="the agent's configuration file ([core] thresholds), to replay with "
                        "the same settings as the live agent")
    p.set_defaults(func=_run_postmortem)


def _core_config(path: str | None) -> Any:
    # The same loader as the live agent (errors name file, line and key). driverctl overrides are
    # not read: they belong to the host under investigation, not to the one running this.
    if not path:
        return None
    from pathlib import Path

    from diag.config import parse_text

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the configuration file: {exc.strerror or exc}",
            hint="pass --config a readable TOML file, or leave it out to use the defaults",
        ) from None
    return parse_text(text, path).core


def _run_postmortem(args: argparse.Namespace) -> int:
    try:
        offsets = dict(parse_offset(o) for o in args.offset)
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        raise DiagError(str(exc), title="Bad option", hint="see vfiowatch postmortem --help") from None
    options = pm.Options(
        device=args.device, sandbox=args.sandbox, since_ns=since, until_ns=until,
        offsets=offsets, timeline_limit=max(0, args.limit), config=_core_config(args.config),
    )
    missing = [p for p in args.inputs if not os.path.exists(p)
               and not os.path.exists(p.rpartition("@")[0] or p)]
    inputs = pm.open_inputs(args.inputs, options)
    for inp in inputs:
        if inp.at and inp.at != "end":
            try:
                inp.at_ns = parse_when(inp.at)
            except ValueError as exc:
                raise DiagError(f"{inp.path}@{inp.at}: {exc}", title="Bad input time",
                                hint="give PATH@end or PATH@2026-11-27T14:52:48Z") from None
    progress = _Progress(inputs) if sys.stderr.isatty() else None
    try:
        report = pm.replay(inputs, options, progress)
    finally:
        if progress is not None:
            progress.done()
    out = {"text": render_text, "json": render_json, "markdown": render_markdown}[args.format]
    sys.stdout.write(out(report))
    if missing:
        return 2
    return report.exit_status


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal).

    Drawn only once the replay has run for `DELAY_S`: small inputs finish before a bar would
    be worth seeing; redrawn at most every 0.1 s.
    """

    DELAY_S = 0.5

    def __init__(self, inputs: list[pm.Input]) -> None:
        self.inputs = inputs
        self.total = sum(_size(i.path) for i in inputs) or 1
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        if now - self.start < self.DELAY_S or now - self.last < 0.1:
            return
        self.last = now
        done = sum(i.stats.bytes_read for i in self.inputs)
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}%  {count:,} events")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------
# Describing events
# --------------------------------------------------------------------------------------------


def fmt_time(ts: int, *, date: bool = False) -> str:
    if 0 <= ts < pm.BOOT_RELATIVE_NS:
        return f"boot+{ts / 1e9:.6f}s"
    dt = datetime.fromtimestamp(ts // 1_000_000_000, UTC)
    frac = f"{ts % 1_000_000_000 // 1000:06d}"
    return dt.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S") + "." + frac


def _drv(d: str | None) -> str:
    return d if d else "(driver not recorded)"


def describe(e: ev.Event) -> str:
    """One line saying what an event means (raw: escape before printing)."""
    t = type(e)
    if t is ev.DeviceBound:
        assert isinstance(e, ev.DeviceBound)
        prev = f" (from {e.previous_driver})" if e.previous_driver else ""
        return f"{e.bdf} bound to {_drv(e.driver)}{prev}"
    if t is ev.DeviceUnbound:
        assert isinstance(e, ev.DeviceUnbound)
        return f"{e.bdf} unbound" + (f" from {e.previous_driver}" if e.previous_driver else "")
    if t is ev.DeviceAdded:
        assert isinstance(e, ev.DeviceAdded)
        ids = f" [{e.vendor}:{e.device}]" if e.vendor else ""
        return f"{e.bdf} added{ids}" + (f" (VF {e.vf_index} of {e.pf})" if e.pf else "")
    if t is ev.DeviceRemoved:
        assert isinstance(e, ev.DeviceRemoved)
        return f"{e.bdf} removed"
    if t is ev.DeviceChanged:
        assert isinstance(e, ev.DeviceChanged)
        what = f" {e.attribute}={e.value}" if e.attribute else ""
        return f"{e.bdf} changed{what}" + (f" (driver {e.driver})" if e.driver else "")
    if t is ev.NetdevAdded or t is ev.NetdevRemoved:
        assert isinstance(e, (ev.NetdevAdded, ev.NetdevRemoved))
        idx = f" (ifindex {e.ifindex})" if e.ifindex is not None else ""
        verb = "appeared under" if t is ev.NetdevAdded else "removed from"
        return f"netdev {e.ifname}{idx} {verb} {e.bdf or 'a non-PCI device'}"
    if t is ev.VfioDeviceAdded or t is ev.VfioDeviceRemoved:
        assert isinstance(e, (ev.VfioDeviceAdded, ev.VfioDeviceRemoved))
        verb = "created" if t is ev.VfioDeviceAdded else "removed"
        who = e.bdf or (f"group {e.group}" if e.group is not None else "?")
        return f"/dev/{e.devname or 'vfio'} {verb} ({who})"
    if t is ev.LinkChanged:
        assert isinstance(e, ev.LinkChanged)
        carrier = {True: "carrier", False: "no-carrier", None: ""}[e.carrier]
        bits = [x for x in (e.operstate, carrier, "admin-up" if e.admin_up else "admin-down",
                            e.mac) if x]
        where = f" ({e.bdf})" if e.bdf else ""
        return f"link {e.ifname} #{e.ifindex} in {e.netns.label}{where}: {' '.join(bits)}"
    if t is ev.LinkRemoved:
        assert isinstance(e, ev.LinkRemoved)
        return f"link {e.ifname} #{e.ifindex} removed from {e.netns.label}"
    if t is ev.SysfsWriteObserved:
        assert isinstance(e, ev.SysfsWriteObserved)
        who = f"{e.actor.comm}[{e.actor.pid}]"
        res = "ok" if e.result >= 0 else f"error {-e.result}"
        if e.stage == "open":  # tracepoint mode, open-only variant: only the open was seen
            got = f", {e.value!r} read back" if e.value_recovered else ""
            return f"{who} opened {e.path} for writing ({res}{got})"
        return f"{who} wrote {e.value!r} to {e.path} ({res})"
    if t is ev.LogLineMatched:
        assert isinstance(e, ev.LogLineMatched)
        sb = f" sandbox={e.sandbox_id[:12]}" if e.sandbox_id else ""
        return f"[{e.signature}]{sb} {e.text}"
    if t is ev.KataConfigLoaded:
        assert isinstance(e, ev.KataConfigLoaded)
        c = e.config
        return (f"Kata config {c.handler}: cold_plug_vfio={c.cold_plug_vfio} "
                f"hot_plug_vfio={c.hot_plug_vfio} pcie_root_port={c.pcie_root_port}"
                + (f" ({c.path})" if c.path else "") + (" [assumed]" if c.assumed else ""))
    if t is ev.KataConfigInvalid:
        assert isinstance(e, ev.KataConfigInvalid)
        return f"Kata config invalid: {e.path}: {e.message}"
    if t is ev.SandboxStarted:
        assert isinstance(e, ev.SandboxStarted)
        vfs = ", ".join(v.bdf for v in e.vfs) or "no VFs"
        return f"sandbox {e.sandbox_id[:12]} ({e.runtime}) cold_plug_vfio={e.cold_plug_vfio}: {vfs}"
    if t is ev.SandboxStopped:
        assert isinstance(e, ev.SandboxStopped)
        return f"sandbox {e.sandbox_id[:12]} stopped"
    if t is ev.InventoryObserved:
        assert isinstance(e, ev.InventoryObserved)
        n_vfio = sum(1 for d in e.devices if d.driver == "vfio-pci")
        return f"inventory: {len(e.devices)} PCI devices, {n_vfio} on vfio-pci"
    if t is ev.Finding:
        assert isinstance(e, ev.Finding)
        return f"FINDING {e.status} {e.severity.label} {e.rule}: {e.summary}"
    if t is ev.EventsLost:
        assert isinstance(e, ev.EventsLost)
        n = "some" if e.count is None else str(e.count)
        return f"{e.lost_source} lost {n} events" + (f": {e.reason}" if e.reason else "")
    if t is ev.Resynced:
        assert isinstance(e, ev.Resynced)
        return f"{e.resynced_source} resynced ({e.changes} changes)"
    if t is ev.SourceStateChanged:
        assert isinstance(e, ev.SourceStateChanged)
        return f"source {e.name} {'up' if e.up else 'down'}" + (f": {e.reason}" if e.reason else "")
    rec = codec.to_record(e)
    rec.pop("kind", None)
    rec.pop("ts_ns", None)
    rec.pop("source", None)
    return e.kind + " " + " ".join(f"{k}={v}" for k, v in rec.items())


def _input_label(report: pm.Report, idx: int) -> str:
    if idx < 0:
        return "replay"
    return os.path.basename(report.inputs[idx].path)


def _place(inp: pm.Input) -> str:
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


def _headline(report: pm.Report) -> str:
    n_in = len(report.inputs)
    span = ""
    if report.untimed_only:
        span = ", no input has times"
    elif report.first_ns is not None and report.last_ns is not None:
        span = (f", {fmt_time(report.first_ns, date=True)} → {fmt_time(report.last_ns)}"
                + (" UTC" if report.first_ns >= pm.BOOT_RELATIVE_NS else "")
                + f" ({(report.last_ns - report.first_ns) / 1e9:.1f} s)")
    return (f"vfiowatch postmortem: {n_in} input{'s' if n_in != 1 else ''}, "
            f"{report.events_total:,} events{span}")


def _input_lines(report: pm.Report) -> list[str]:
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
        out.append(f"{indent}  actor: {safe(f.actor.comm)}[{f.actor.pid}] {safe(f.actor.exe)}")
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


def _shown_findings(report: pm.Report) -> list[ev.Finding]:
    flt = pm._Filter(report.options)
    flt.sandbox_bdfs = {d.device.bdf for d in (report.state.devices if report.state else ())
                        if flt.is_mine(d.sandbox_id)} if report.options.sandbox else set()
    return sorted((f for f in report.findings if flt.shows_finding(f)),
                  key=lambda f: (-f.severity, f.first_ns))


def _evicted_note(report: pm.Report) -> str:
    book = report.book
    if book is None or not book.evicted:
        return ""
    per = ", ".join(f"{r} {s}: {n}" for (r, s), n in sorted(book.by_rule.items()))
    return (f"; {book.total:,} raised in all, the oldest {book.evicted:,} resolved ones not "
            f"shown ({per})")


def _n_entries(n: int) -> str:
    return f"{n:,} entr{'y' if n == 1 else 'ies'}"


def _problems(report: pm.Report) -> list[str]:
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


def render_text(report: pm.Report) -> str:
    lines = [_headline(report)]
    problems = _problems(report)
    if problems:
        lines += ["", "Not read whole (exit status 2)"] + [f"  ! {safe(x)}" for x in problems]
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
              + ("; ~ = stamp uncertain, ? = order against the neighbouring input uncertain)"
                 if any(e.uncertainty_ns or e.order_uncertain for e in report.timeline) else ")")]
    width = max((len(_input_label(report, e.input)) for e in report.timeline), default=6)
    day = None
    prev = 0
    for e in report.timeline:
        if e.seq > prev + 1:
            lines.append(f"  … {_n_entries(e.seq - prev - 1)} not shown")
        prev = e.seq
        if e.ts_ns >= pm.BOOT_RELATIVE_NS and not e.static:
            d = fmt_time(e.ts_ns, date=True)[:10]
            if d != day:
                lines.append(f"  -- {d} (UTC)")
                day = d
        mark = ("?" if e.order_uncertain else " ") + ("~" if e.uncertainty_ns else " ")
        when = "(no time)" if e.static else "(time unknown)" if (
            e.uncertainty_ns < 0 or report.untimed_only) else fmt_time(e.ts_ns)
        lines.append(f"  {when:>17}{mark} {safe(_input_label(report, e.input)):<{width}}  "
                     f"{safe(describe(e.event), 240)}")
    if report.timeline_total > prev:
        lines.append(f"  … {report.timeline_total - prev:,} more")
    if report.timeline_total > shown:
        lines.append(f"  ({report.timeline_total - shown:,} entries not shown: the start, each "
                     "finding with its context and the end are; narrow with --device, --sandbox, "
                     "--since/--until or raise --limit)")
    lines += ["", _verdict(report)]
    return "\n".join(lines) + "\n"


def _verdict(report: pm.Report) -> str:
    code = report.exit_status
    worst = report.worst
    if code == 2:
        n = len(report.unreadable) + len(report.not_fully_read)
        tail = f"; findings up to {worst.label}" if worst else ""
        return f"exit 2: {n} input(s) not read whole (see the top){tail}"
    if code == 1:
        return f"exit 1: findings up to {worst.label if worst else '?'}"
    return "exit 0: no finding reached warning"


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def report_json(report: pm.Report) -> dict[str, Any]:
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


def render_json(report: pm.Report) -> str:
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


def render_markdown(report: pm.Report) -> str:
    out = ["# vfiowatch postmortem report", "", _md(_headline(report)), "",
           f"**Result:** {_md(_verdict(report))}", ""]
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
            f"{safe(_input_label(report, e.input))}: {safe(describe(e.event), 240)}")
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

