"""Provides the one small error hierarchy; the CLI prints each as a titled message with a hint."""

from __future__ import annotations


class DiagError(Exception):
    """An error the user can act on: a title, what happened, and how to fix it."""

    title = "vfiowatch error"
    exit_code = 2

    def __init__(self, message: str, *, hint: str = "", title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if title is not None:
            self.title = title

    def render(self) -> str:
        text = f"{self.title}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class RootError(DiagError):
    """The --root directory does not hold what the agent needs (no sysfs, unreadable)."""

    title = "Bad --root"


class ConfigError(DiagError):
    """A configuration file (ours or Kata's) is malformed; the message names file and line."""

    title = "Configuration error"


class SourceUnavailable(DiagError):
    """A source cannot run here; the message says why and how to fix it."""

    title = "Source unavailable"


class ProbeLoadError(SourceUnavailable):
    """An eBPF program failed to compile, load or attach."""

    title = "eBPF probe failed"


class JournalFormatError(DiagError):
    """A journal file is not ours, is from a newer schema, or is damaged beyond the last line."""

    title = "Journal format error"
