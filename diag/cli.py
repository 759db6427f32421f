"""Provides the `vfiowatch` command line: the composition root, argparse built from COMMANDS.

Each command is a module of `diag.commands` registered in its list (one line); this module
only builds the parser from the registry, runs the chosen command, and turns a DiagError into a
titled message with a hint and its exit status.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import typing
from collections.abc import Iterator, Sequence

from diag import __version__
from diag.commands import COMMANDS
from diag.common.errors import DiagError, RootError

ROOT_HELP = (
    "read every host path (/sys, /proc, /run, /etc, /opt, /usr/share, /dev) under DIR, like "
    "node_exporter's --path.rootfs; e.g. /host in a container (default: $VFIOWATCH_ROOT or /). "
    "Links resolve inside DIR as in a chroot; a path that would lead outside it is refused and "
    "reported (docs/security.md). Given before or after the command name"
)


class Parser(argparse.ArgumentParser):
    """argparse with the errors people need: the failing command's own usage, "did you mean"
    for a mistyped command, option or choice, and no unknown word passed up to the top."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.prog == "vfiowatch":
            self._unknown_before_command(list(sys.argv[1:] if args is None else args))
        ns, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != "vfiowatch":
            # A command's parser: a word it does not know is its error, shown with its usage
            # (argparse would hand it up and print the top-level usage instead).
            self.error("unrecognized arguments: " + " ".join(extras))
        return ns, extras

    def _unknown_before_command(self, argv: list[str]) -> None:
        """An unknown option before the command name is named as such (argparse would take its
        value for the command and say `invalid choice: '/'`)."""
        commands = {n for a in self._actions if isinstance(a, argparse._SubParsersAction)
                    for n in a.choices}
        takes_value = {s for a in self._actions if a.nargs is None and a.option_strings
                       and not isinstance(a, argparse._VersionAction) for s in a.option_strings}
        skip = False
        for word in argv:
            if skip:
                skip = False
                continue
            if word in commands or word == "--" or not word.startswith("-"):
                return
            name = word.split("=", 1)[0]
            known = [s for s in self._option_string_actions if s.startswith(name)]
            if not known:
                self.error(f"unrecognized arguments: {word}")
            skip = "=" not in word and len(known) == 1 and known[0] in takes_value

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{suggest(self, message)}\n")


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def suggest(parser: argparse.ArgumentParser, message: str) -> str:
    """" (did you mean ...?)" for the mistyped word of an argparse error message, or ""."""
    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if m:
        choices = re.findall(r"'([^']*)'", m[2])
        close = difflib.get_close_matches(m[1], choices, n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""
    m = re.match(r"unrecognized arguments: (.*)", message)
    if m:
        hints = []
        for word in m[1].split():
            if not word.startswith("-"):
                continue
            name = word.split("=", 1)[0]
            close = difflib.get_close_matches(name, _option_strings(parser), n=1, cutoff=0.6)
            if close:
                hints.append((close[0], name))
        if len(hints) == 1:
            return f" (did you mean {hints[0][0]}?)"
        return (" (did you mean " + ", ".join(f"{c} for {n}" for c, n in hints) + "?)"
                if hints else "")
    return ""


def command_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below `parser` (commands, and subcommands such as `record sysfs`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield sub
                yield from command_parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    """The whole argparse tree: global options, then one subparser per registered command."""
    parser = Parser(
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
    parser.add_argument("--root", default=os.environ.get("VFIOWATCH_ROOT", "/"), metavar="DIR",
                        help=ROOT_HELP)
    # `man` and `completion` describe the whole command line: they get the tree from here.
    parser.set_defaults(_parser=parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.load().values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description)
        cmd.arguments(p)
        if cmd.run is not None:
            p.set_defaults(func=cmd.run)
    for cp in command_parsers(parser):
        # The README promises that every command takes --root: after the command name too.
        # SUPPRESS keeps a value given before the name when none is given after it.
        if "--root" not in cp._option_string_actions:
            cp.add_argument("--root", default=argparse.SUPPRESS, metavar="DIR",
                            help="read the host's paths under DIR (default: $VFIOWATCH_ROOT "
                                 "or /): the global --root, given after the command name")
    return parser


def check_root(root: str) -> None:
    """Every command refuses a --root that is not a directory, with the same message."""
    if not os.path.isdir(root):
        raise RootError(
            f"{root} is not a directory",
            hint="pass --root a directory holding the host's file system (default /)",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    for failure in COMMANDS.failures:  # the command is missing from --help: say why, once
        print(f"vfiowatch: {failure.text()}", file=sys.stderr)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_root(args.root)
        return int(args.func(args))
    except DiagError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
