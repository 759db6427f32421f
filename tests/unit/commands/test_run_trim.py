"""The service's heap trim hands freed pages back without starting a process."""

from __future__ import annotations

import subprocess

import pytest

from diag.commands.run import _trim_heap


def test_the_heap_trim_starts_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """`malloc_trim` comes from the process's own symbols: finding libc by name ran
    `ldconfig -p` in a child at every trim (11 ms of CPU, inside the idle measurement)."""
    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError(f"a process was started: {args[1:2]}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    _trim_heap()
