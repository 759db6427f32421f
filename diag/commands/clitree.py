"""Provides the command line as data: every command, subcommand and option read from argparse.

`vfiowatch man` and `vfiowatch completion` are generated from it, so the man page and the shell
completions say exactly what the parser accepts (one definition: the commands' `arguments`).
The composition root (`diag.cli`) hands the top-level parser to the commands as `args._parser`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

DIR_METAVARS = frozenset({"DIR", "OUT"})
FILE_METAVARS = frozenset({"PATH", "FILE", "JOURNAL", "TOML", "INPUT", "JOURNAL_OR_DIR"})


@dataclass(frozen=True, slots=True)
class Option:
    """One option or positional of a command."""

    flags: tuple[str, ...]
    """`("--format",)`; empty for a positional."""
    metavar: str
    """What its value is called (`DIR`, `TIME`); empty for a flag without a value."""
    help: str
    choices: tuple[str, ...] = ()
    completes: str = ""
    """`dir`, `file` or "" (nothing to offer): what a shell offers for its value."""
    repeat: bool = False
    """A positional taking several values (`INPUT...`)."""

    @property
    def takes_value(self) -> bool:
        return bool(self.metavar)


@dataclass(slots=True)
class Node:
    """A command (the top level, `snapshot`, `record`, `record sysfs`) and what it accepts."""

    path: tuple[str, ...]
    """Words after `vfiowatch`: () for the top level, ("record", "sysfs")."""
    summary: str
    """The one line `vfiowatch --help` lists it with."""
    description: str
    usage: str
    options: list[Option] = field(default_factory=list)
    positionals: list[Option] = field(default_factory=list)
    children: dict[str, Node] = field(default_factory=dict)

    def walk(self) -> list[Node]:
        """This node and every node below it, depth first, in the parser's order."""
        out = [self]
        for child in self.children.values():
            out.extend(child.walk())
        return out


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    mv = action.metavar
    if isinstance(mv, tuple):
        return " ".join(mv)
    return mv or action.dest.upper()


def _completes(action: argparse.Action, metavar: str) -> str:
    if action.choices is not None:
        return ""
    if metavar in DIR_METAVARS:
        return "dir"
    if metavar in FILE_METAVARS or action.type is Path:
        return "file"
    return ""


def _option(action: argparse.Action) -> Option:
    metavar = _metavar(action)
    choices = tuple(str(c) for c in action.choices) if action.choices is not None else ()
    return Option(
        flags=tuple(action.option_strings), metavar=metavar,
        help=action.help or "",  # no help text of vfiowatch uses argparse's %(default)s
        choices=choices, completes=_completes(action, metavar),
        repeat=action.nargs in ("+", "*", argparse.REMAINDER),
    )


def tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), summary: str = "") -> Node:
    """The command line below `parser` as a Node tree."""
    node = Node(path=path, summary=summary, description=parser.description or "",
                usage=parser.format_usage().removeprefix("usage: ").strip())
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                node.children[name] = tree(sub, (*path, name), helps.get(name, ""))
        elif action.option_strings:
            if action.help != argparse.SUPPRESS:
                node.options.append(_option(action))
        elif action.help != argparse.SUPPRESS:
            node.positionals.append(_option(action))
    return node


def root_parser(args: argparse.Namespace) -> argparse.ArgumentParser:
    """The top-level parser the composition root put in `args`."""
    parser = getattr(args, "_parser", None)
    if not isinstance(parser, argparse.ArgumentParser):
        raise RuntimeError("diag.cli did not pass its parser (args._parser)")
    return parser
