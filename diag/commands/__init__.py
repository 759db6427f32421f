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

from diag.common.registry import Registry


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


def register(cmd: Command) -> Command:
    """Register a command under its name (ordered by the module that defines its arguments)."""
    return COMMANDS.add(cmd.name, cmd, module=cmd.arguments.__module__)
