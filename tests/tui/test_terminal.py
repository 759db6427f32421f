"""The real `vfiowatch` binary in a real terminal (tmux) and without one: Ctrl+C quits, and a
dashboard with no terminal refuses at once instead of spinning at 100 % CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, vfiowatch_bin

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is installed by deploy/packages.txt (group test)")


@contextmanager
def tmux_session(command: str, size: tuple[int, int] = (100, 30)) -> Iterator[list[str]]:
    """A tmux server of its own running `command` then `EXITED <status>`; yields its argv."""
    name = f"vfiowatch-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmux = ["tmux", "-L", name]
    subprocess.run([*tmux, "new-session", "-d", "-s", name, "-x", str(size[0]), "-y", str(size[1]),
                    f"cd {REPO} && TERM=xterm-256color {command}; echo EXITED $?; sleep 30"],
                   check=True, timeout=10)
    try:
        yield [*tmux]
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
        (Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / name).unlink(
            missing_ok=True)


def screen(tmux: list[str]) -> str:
    return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True,
                          timeout=10).stdout


def wait_screen(tmux: list[str], want: str, timeout: float = 20.0) -> str:
    end = time.monotonic() + timeout
    text = ""
    while time.monotonic() < end:
        text = screen(tmux)
        if want in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{want!r} not on screen within {timeout}s:\n{text}")


@needs_tmux
def test_ctrl_c_quits_the_dashboard() -> None:
    """Ctrl+C in the dashboard ends it with status 0, as in any terminal program (it used to
    only say which key quits)."""
    with tmux_session(f"{vfiowatch_bin()} demo --paused") as tmux:
        wait_screen(tmux, "Devices")
        subprocess.run([*tmux, "send-keys", "C-c"], check=True, timeout=10)
        wait_screen(tmux, "EXITED 0", timeout=10)


@pytest.mark.parametrize("command", [["tui"], ["demo"], ["tui", "--replay",
                                                          str(REPO / "diag" / "data" / "demo.jsonl")]])
def test_without_a_terminal_the_dashboard_refuses_at_once(command: list[str]) -> None:
    """`vfiowatch tui </dev/null` (and `make run </dev/null`) exits non-zero within seconds
    saying a terminal is needed, instead of spinning at 100 % CPU until killed."""
    t0 = time.monotonic()
    res = subprocess.run([vfiowatch_bin(), *command], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "needs a terminal" in res.stderr and "standard input" in res.stderr
    assert "Traceback" not in res.stderr
    assert time.monotonic() - t0 < 20
