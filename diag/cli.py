"""Provides the `vfiowatch` command line: the composition root of every mode.

Subcommands register in COMMANDS (one function that adds its parser, one that runs it), so a new
mode is one function pair plus one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from diag import __version__
from diag.errors import DiagError
from diag.paths import HostPaths
from diag.text import safe

Adder = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]
COMMANDS: list[Adder] = []


def command(fn: Adder) -> Adder:
    COMMANDS.append(fn)
    return fn


# --------------------------------------------------------------------------------------------
# snapshot
# --------------------------------------------------------------------------------------------

SNAPSHOT_SCHEMA = 1


def _snapshot_json(paths: HostPaths) -> dict[str, Any]:
    from dataclasses import asdict

    from diag.sources import sysfs

    # The snapshot schema lists every field, defaults included, so consumers need no defaults.

    devices = sysfs.scan(paths)
    return {
        "schema": SNAPSHOT_SCHEMA,
        "kind": "vfiowatch_snapshot",
        "agent_version": __version__,
        "root": str(paths.root),
        "devices": [asdict(d) for d in devices],
        "refused": paths.refusals.all(),
    }


def _snapshot_table(paths: HostPaths, color: bool) -> str:
    from diag.sources import sysfs

    devices = sysfs.scan(paths)
    rows = []
    header = ("BDF", "ID", "CLASS", "DRIVER", "OVERRIDE", "GROUP", "NUMA", "SR-IOV", "NETDEV", "VFIO")
    for d, depth in sysfs.pf_vf_order(devices):
        if d.role == "pf":
            sriov = f"PF {d.sriov_numvfs}/{d.sriov_totalvfs} VFs"
        elif d.role == "vf":
            sriov = f"VF {d.vf_index if d.vf_index is not None else '?'} of {d.pf}"
        else:
            sriov = "-"
        rows.append((
            ("  └ " if depth else "") + d.bdf,
            f"{d.vendor}:{d.device}",
            d.class_code,
            d.driver or "(none)",
            d.driver_override or "-",
            "-" if d.iommu_group is None else str(d.iommu_group),
            "-" if d.numa_node is None else str(d.numa_node),
            sriov,
            ",".join(d.netdevs) or "-",
            d.vfio_group_path or "-",
            d,
        ))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(safe(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for r in rows:
        cells = [safe(str(c)).ljust(w) for c, w in zip(r[:-1], widths, strict=True)]
        d = r[-1]
        line = "  ".join(cells).rstrip()
        if color and d.driver == "vfio-pci":
            line = f"\x1b[1;33m{line}\x1b[0m"
        lines.append(line)
        if d.errors:
            lines.append("      ! " + safe("; ".join(d.errors)))
    n_vfio = sum(1 for r in rows if r[-1].driver == "vfio-pci")
    lines.append(f"{len(rows)} PCI devices, {n_vfio} on vfio-pci")
    refused = paths.refusals.all()
    if refused:
        lines.append(f"{len(refused)} paths refused: they lead outside --root {safe(str(paths.root))}")
        lines.extend(f"  ! {safe(r)}" for r in refused)
    return "\n".join(lines)


@command
def _add_snapshot(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "snapshot",
        help="list the PCI devices that matter for VF passthrough",
        description=(
            "List every PCI device with its id and class, bound driver, driver_override, IOMMU "
            "group, NUMA node, SR-IOV role (PF with its VFs nested, VF with its PF and index), "
            "network interfaces and, on vfio-pci, its /dev/vfio group. Reads sysfs only."
        ),
    )
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table for people (vfio-pci highlighted), json for machines "
                        "(stable schema, see README 'Snapshot JSON')")
    p.set_defaults(func=_run_snapshot)


def _run_snapshot(args: argparse.Namespace) -> int:
    paths = HostPaths.at(args.root)
    if args.format == "json":
        json.dump(_snapshot_json(paths), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(_snapshot_table(paths, color))
    return 0


# --------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------


@command
def _add_check(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "check",
        help="preflight: can this host be watched, and how well",
        description=(
            "Check privileges, PCI sysfs, bcc and kernel headers, tracefs, kprobes, syscall "
            "tracepoints, the kernel uevent socket, rtnetlink, the IOMMU, the eBPF mode that "
            "would be chosen and the Kata configuration with its effective cold_plug_vfio. "
            "Each line is ✓ or ✗ with a one-line fix. Exit status 0 when the agent can run "
            "(fully or degraded), 1 when it cannot run at all."
        ),
    )
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(func=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from diag.check import run_checks

    results = run_checks(HostPaths.at(args.root))
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
            mark = "✓" if r.ok else "✗"
            print(f"{mark} {safe(r.name):22} {safe(r.detail)}")
            if not r.ok and r.fix:
                print(f"  {'':22} fix: {safe(r.fix)}")
        print("can run: " + ("no" if fatal else "yes"))
    return 1 if fatal else 0


# --------------------------------------------------------------------------------------------
# record
# --------------------------------------------------------------------------------------------


@command
def _add_record(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "record",
        help="record kernel data as test fixtures",
        description="Record what the agent reads, in the formats of tests/fixtures/.",
    )
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    s = what.add_parser(
        "sysfs",
        help="copy the sysfs files the PCI scanner reads into a directory tree",
        description=(
            "Copy exactly the sysfs files the PCI scanner reads (ids, class, driver links, "
            "driver_override, IOMMU groups, SR-IOV links, net/) into OUT, keeping symlinks as "
            "relative links, so `vfiowatch --root OUT snapshot` shows the same inventory. "
            "Reads the host; writes only under OUT, and deletes nothing it did not write: OUT "
            "must be new, empty, or an earlier recording (marked by OUT/.vfiowatch-recording, "
            "which lists what it wrote; only that is replaced)."
        ),
    )
    s.add_argument("--out", required=True, type=Path,
                   help="directory to write: new, empty, or an earlier recording (replaced)")
    s.set_defaults(func=_run_record_sysfs)


def _run_record_sysfs(args: argparse.Namespace) -> int:
    from diag.record import record_sysfs

    paths = HostPaths.at(args.root)
    n = record_sysfs(paths, args.out)
    print(f"copied {n} files to {args.out}")
    refused = paths.refusals.all()
    if refused:
        print(f"{len(refused)} paths refused: they lead outside --root {safe(str(paths.root))} "
              "(not copied)", file=sys.stderr)
        for r in refused:
            print(f"  ! {safe(r)}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

EXTRA_COMMAND_MODULES: list[str] = [
    "diag.dashboard",
    "diag.service",
    "diag.postmortem",
]
"""Modules that add subcommands (run, tui, demo, postmortem), one line each."""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    for mod in EXTRA_COMMAND_MODULES:
        importlib.import_module(mod)
    parser = argparse.ArgumentParser(
        prog="vfiowatch",
        description=(
            "Watch SR-IOV VFs on a Kata Containers host: driver bind/unbind (kernel uevents), "
            "who asked for each move (eBPF), link state in every network namespace "
            "(rtnetlink), and each sandbox's effective cold_plug_vfio; flag a VF rebound to "
            "vfio-pci while cold plug is disabled (Kata issue #10162) and related VF failures. "
            "It only observes: it never writes to sysfs or changes a device."
        ),
        epilog="Run `vfiowatch COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"vfiowatch {__version__}")
    parser.add_argument(
        "--root", default=os.environ.get("VFIOWATCH_ROOT", "/"), metavar="DIR",
        help="read every host path (/sys, /proc, /run, /etc, /opt, /usr/share, /dev) under DIR, "
             "like node_exporter's --path.rootfs; e.g. /host in a container "
             "(default: $VFIOWATCH_ROOT or /). Links resolve inside DIR as in a chroot; a path "
             "that would lead outside it is refused and reported (README 'Security model')",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except DiagError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
