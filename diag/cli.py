"""Provides the `vfiowatch` command line: the composition root, argparse built from COMMANDS.

Each command is a module of `diag.commands` registered in its list (one line); this module
only builds the parser from the registry, runs the chosen command, and turns a DiagError into a
titled message with a hint and its exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from diag import __version__
from diag.commands import COMMANDS
from diag.common.errors import DiagError


def build_parser() -> argparse.ArgumentParser:
    """The whole argparse tree: global options, then one subparser per registered command."""
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
    for cmd in COMMANDS.load().values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description)
        cmd.arguments(p)
        if cmd.run is not None:
            p.set_defaults(func=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    for failure in COMMANDS.failures:  # the command is missing from --help: say why, once
        print(f"vfiowatch: {failure.text()}", file=sys.stderr)
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
