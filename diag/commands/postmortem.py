"""Provides `vfiowatch postmortem`: recorded journals and operators' artifacts -> timeline and findings.

The command is thin: the engine (`diag.postmortem`) reads, aligns and replays through the live
Correlator and `diag.postmortem.output` renders the report as text, JSON or Markdown; this
module parses the options, shows progress on a terminal and picks the output. Exit status: 0
when no finding reaches warning, 1 when one does, 2 when an input was not read whole (the
report is still printed, those inputs named first).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from diag.commands import Command, register
from diag.common.bdf import is_bdf, normalise_bdf
from diag.common.errors import ConfigError, DiagError
from diag.common.when import FORMS, parse_when, seconds_ns

if TYPE_CHECKING:  # the engine is imported when the command runs: building the CLI stays cheap
    from diag import postmortem as pm

# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def parse_offset(text: str) -> tuple[str, int]:
    """`SECONDS`, `@BOOT-TIME`, `PATH=SECONDS` or `PATH=@BOOT-TIME` -> (path or '*', ns)."""
    path, sep, value = text.rpartition("=")
    if not sep:
        path, value = "*", text
    value = value.strip()
    if value.startswith("@"):
        return path or "*", parse_when(value[1:])
    ns = seconds_ns(value)
    if ns is None:
        raise ValueError(f"bad --offset {text!r}: use SECONDS, @BOOT-TIME, PATH=SECONDS or "
                         "PATH=@BOOT-TIME")
    return path or "*", ns


def _device(text: str) -> str:
    """`0000:01:10.0` or `01:10.0` (as lspci prints it) -> the full address; else refused."""
    bdf = normalise_bdf(text)
    if not is_bdf(bdf):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a PCI address; use 0000:01:10.0, or 01:10.0 as lspci prints it")
    return bdf


def _when(text: str, name: str) -> tuple[int | None, str | None]:
    """An absolute time now, or a time relative to the inputs (`16:07:58`, `+90`) checked now
    and resolved by the replay against their first stamp: (ns, None) or (None, text)."""
    if not text.strip().startswith("+"):  # `+90` is after the start here, as in tui --at
        try:
            return parse_when(text), None
        except ValueError:
            pass
    try:
        parse_when(text, 0)
    except ValueError:
        raise DiagError(f"--{name}: cannot read {text!r} as a time; use {FORMS}, or epoch "
                        "seconds", title="Bad option", hint="see vfiowatch postmortem --help") from None
    return None, text


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files or directories; PATH@end or PATH@TIME says when a listing was "
                        "taken")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="text for a terminal, json for machines (findings in the journal's "
                        "schema), markdown to paste into a ticket")
    p.add_argument("--device", metavar="BDF", type=_device,
                   help="only this PCI device: 0000:01:10.0, or 01:10.0 as lspci prints it")
    p.add_argument("--sandbox", metavar="ID",
                   help="only this Kata sandbox (its id, or the 12-character prefix the reports "
                        "show) and its devices")
    p.add_argument("--pod", metavar="NAME",
                   help="only this Kubernetes pod's sandboxes and their devices (the pod named "
                        "by the bundles, state files or crictl listings in the inputs)")
    p.add_argument("--namespace", metavar="NS",
                   help="only the pods of this Kubernetes namespace (with --pod: that pod in it)")
    p.add_argument("--since", metavar="TIME",
                   help="show from this time: ISO 8601 (UTC unless a zone is given), epoch "
                        "seconds, HH:MM[:SS[.fff]] on the inputs' first day, or +SECONDS after "
                        "their start (as tui --at)")
    p.add_argument("--until", metavar="TIME",
                   help="stop the replay at this time (the forms of --since); for captures "
                        "without ticks, time is advanced to it so grace periods can expire")
    p.add_argument("--offset", action="append", default=[], metavar="[PATH=]SECONDS|@BOOT",
                   help="wall-clock = monotonic + SECONDS for monotonic captures (udevadm); "
                        "@TIME gives the boot time instead (`uptime -s`); repeat per file")
    p.add_argument("--limit", type=int, default=2000, metavar="N",
                   help="timeline entries to show (default 2000); every active finding and the "
                        "newest 1000 resolved ones are shown, with totals for all")
    p.add_argument("--config", metavar="TOML",
                   help="the agent's configuration file ([core] thresholds), to replay with "
                        "the same settings as the live agent")


def _core_config(path: str | None) -> Any:
    # The same loader as the live agent (errors name file, line and key). driverctl overrides are
    # not read: they belong to the host under investigation, not to the one running this.
    if not path:
        return None
    from pathlib import Path

    from diag.runtime.settings import parse_text

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
        since, since_text = _when(args.since, "since") if args.since else (None, None)
        until, until_text = _when(args.until, "until") if args.until else (None, None)
    except ValueError as exc:
        raise DiagError(str(exc), title="Bad option", hint="see vfiowatch postmortem --help") from None
    from diag import postmortem as pm
    from diag.postmortem import output

    options = pm.Options(
        device=args.device, sandbox=args.sandbox, pod=args.pod, namespace=args.namespace,
        since_ns=since, until_ns=until, since_text=since_text, until_text=until_text,
        offsets=offsets, timeline_limit=max(0, args.limit), config=_core_config(args.config),
    )
    missing = [p for p in args.inputs if not os.path.exists(p)
               and not os.path.exists(p.rpartition("@")[0] or p)]
    inputs = pm.open_inputs(args.inputs, options)
    _listing_times(inputs)
    progress = _Progress(inputs) if sys.stderr.isatty() else None
    try:
        report = pm.replay(inputs, options, progress)
    finally:
        if progress is not None:
            progress.done()
    out = {"text": output.render_text, "json": output.render_json,
           "markdown": output.render_markdown}[args.format]
    sys.stdout.write(out(report))
    if missing:
        return 2
    return report.exit_status


def _listing_times(inputs: list[pm.Input]) -> None:
    """`PATH@TIME`: the moment a listing was taken, on the common clock (`end` is placed by
    the replay, after the other inputs' last event)."""
    for inp in inputs:
        if inp.at and inp.at != "end":
            try:
                inp.at_ns = parse_when(inp.at)
            except ValueError as exc:
                raise DiagError(f"{inp.path}@{inp.at}: {exc}", title="Bad input time",
                                hint="give PATH@end or PATH@2026-11-27T14:52:48Z") from None


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



register(Command(
    name="postmortem",
    help="timeline and findings from recorded journals and operators' captures",
    description=(
        "Read any mix of files or directories (plain or .gz; the format is recognised by "
        "content; kata-collect-data reports, sosreports and must-gathers are walked): the "
        "agent's journal and its JSON logs (kubectl logs, Loki or Elasticsearch exports), journalctl text (short, -precise, -iso, -monotonic) and "
        "-o json/export, containerd/Kata logfmt logs, klog (kubelet), kubectl describe "
        "Events, dmesg and dmesg -T, udevadm monitor, ip monitor, lspci (with or without "
        "-D), IOMMU group listings, ps aux/-ef, crictl, Kata configuration files (or pasted "
        "parts), persist.json/state.json, snapshots, Kata's version as pasted (kata-env, "
        "kata-runtime or the shim's --version, dpkg -l/rpm -qa: judged for exposure to the known "
        "Kata VFIO bugs with the configuration given beside it); any other text is searched line by "
        "line for known failures. Kata's own write lines count as the writes. Put them on "
        "one timeline (saying how sure the order is) and replay them through the same "
        "engine as the live agent. A listing can be given as PATH@end or PATH@TIME (when it "
        "was taken). Exit status 0: no finding reached warning; 1: one did; 2: an input "
        "was not read whole (named first)."
    ),
    arguments=_arguments,
    run=_run_postmortem,
))

