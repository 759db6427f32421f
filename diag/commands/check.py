"""Provides `vfiowatch check`: the preflight lines, plus a failed line per plug-in that cannot load.

The checks themselves are in `diag.sources.preflight` (host-wide) and each source's
`preflight` module; this command runs them, adds a failed line for every module of a registry
(sources, importers, rules, checks, commands) that could not be imported, and prints text or
JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from diag.commands import COMMANDS, Command, register
from diag.common.paths import HostPaths
from diag.common.registry import LoadFailure
from diag.common.text import safe

if TYPE_CHECKING:  # the checks are imported when the command runs: building the CLI stays cheap
    from diag.sources.preflight import CheckResult


def load_failures() -> list[LoadFailure]:
    """Every module of every registry that could not be imported (each registry is loaded)."""
    from diag.core.rules import RULES
    from diag.importers import IMPORTERS
    from diag.sources import SOURCES
    from diag.sources.preflight import CHECKS

    out: list[LoadFailure] = []
    for registry in (SOURCES, IMPORTERS, RULES, CHECKS, COMMANDS):
        out.extend(registry.load().failures)
    return out


def failure_line(f: LoadFailure) -> CheckResult:
    """A module that cannot be imported, as a failed preflight line naming it and the error."""
    from diag.sources.preflight import CheckResult

    return CheckResult(f"{f.registry} module", False, f"{f.module} cannot be imported: {f.error}",
                       fix="reinstall vfiowatch (pip install --force-reinstall vfiowatch), or "
                           "fix the module named")


MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}
"""✓ in place; ! optional or degraded (the agent runs, sees less); ✗ missing (the agent cannot
run when the line is fatal, or VF pods cannot run on this host)."""


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")


def _run(args: argparse.Namespace) -> int:
    from diag.sources.preflight import run_checks

    paths = HostPaths.at(args.root)
    # A root without sysfs is refused as every command refuses it: the checks below would
    # describe a host that is not there (fixes for headers and tracefs of nothing).
    paths.require_sysfs()
    results = run_checks(paths)
    results += [failure_line(f) for f in load_failures()]
    fatal = any(r.fatal and not r.ok for r in results)
    if args.format == "json":
        json.dump(
            {
                "schema": 1,
                "can_run": not fatal,
                "checks": [
                    {"name": r.name, "status": r.status, "ok": r.ok, "detail": r.detail,
                     "fix": r.fix, "fatal": r.fatal}
                    for r in results
                ],
            },
            sys.stdout, indent=2,
        )
        sys.stdout.write("\n")
    else:
        for r in results:
            mark = MARKS.get(r.status, "✗")
            print(f"{mark} {safe(r.name):22} {safe(r.detail)}")
            if not r.ok and r.fix:
                print(f"  {'':22} fix: {safe(r.fix)}")
        print("can run: " + ("no" if fatal else "yes"))
    return 1 if fatal else 0


register(Command(
    name="check",
    help="preflight: can this host be watched, and how well",
    description=(
        "Check privileges, PCI sysfs, bcc and kernel headers, tracefs, kprobes, syscall "
        "tracepoints, the kernel uevent socket, rtnetlink, the IOMMU (kernel command line and "
        "groups), the vfio and vfio-pci modules, the SR-IOV PFs with their VF counts, the eBPF "
        "mode that would be chosen, the Kata configuration with its effective cold_plug_vfio, "
        "and each Kata handler's exposure to the known Kata VFIO bugs (#10162 and its kin: the "
        "Kata version and where it was read, cold_plug_vfio, the VFs pods can be given; the "
        "fix). Each line is ✓ (in place), ! (optional or degraded: the agent sees less) or ✗ "
        "(missing), with a one-line fix. Exit status 0 when the agent can run (fully or "
        "degraded), 1 when it cannot run at all, 2 when --root holds no sysfs."
    ),
    arguments=_arguments,
    run=_run,
))
