"""Provides the command registry: one module per `vfiowatch` command, one line each below.

A command module describes itself as a `Command` (name, help, description, a function adding
its arguments, the function running it) and registers it with `register(...)`; `diag.cli`, the
composition root, builds argparse from `COMMANDS` in the order of the list (the order `--help`
shows). Command modules may import every layer below them; nothing below imports them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from diag.common.paths import HostPaths
from diag.common.registry import Registry
from diag.common.text import safe


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One `vfiowatch` subcommand."""

    name: str
    help: str
    """One line for the list of commands in `vfiowatch --help`."""
    description: str
    """The paragraph at the top of `vfiowatch NAME --help`."""
    arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the command's options and positionals to its parser."""
    run: Callable[[argparse.Namespace], int] | None
    """Runs the command and returns the exit status; None when `arguments` gives each of its
    own subcommands a run function (`record sysfs`) through `set_defaults(func=...)`."""


COMMANDS: Registry[Command] = Registry("command", [
    "diag.commands.snapshot",
    "diag.commands.sandboxes",
    "diag.commands.check",
    "diag.commands.record",
    "diag.commands.tui",
    "diag.commands.demo",
    "diag.commands.run",
    "diag.commands.status",
    "diag.commands.findings",
    "diag.commands.postmortem",
    "diag.commands.man",
    "diag.commands.completion",
])
"""Command name -> Command, in the order of this list; one line per command module."""


def refused_lines(paths: HostPaths, note: str = "") -> list[str]:
    """The footer every host command ends with when paths under --root were refused (they
    lead outside it): the count, then each path, escaped."""
    refused = paths.refusals.all()
    if not refused:
        return []
    return [f"{len(refused)} paths refused: they lead outside --root {safe(str(paths.root))}{note}",
            *(f"  ! {safe(r)}" for r in refused)]


def register(cmd: Command) -> Command:
    """Register a command under its name (ordered by the module that defines its arguments)."""
    return COMMANDS.add(cmd.name, cmd, module=cmd.arguments.__module__)
