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


@needs_tmux
def test_in_a_real_80x24_terminal_the_incident_reads_at_a_glance() -> None:
    """The real binary in tmux at 80x24, the recorded story (the frozen copy of the demo)
    opened just after QEMU's refusal: the
    finding row gives the rule's title, then who moved the VF and the pod; the story under it
    says who, which pod, what QEMU did and what to do; the device row names the same pod and
    mover. What a person sees, not what the widget tree holds."""
    story = REPO / "tests" / "fixtures" / "journals" / "lab-demo-story.jsonl"
    with tmux_session(f"{vfiowatch_bin()} tui --replay {story} --at 09:12:38.5",
                      size=(80, 24)) as tmux:
        text = wait_screen(tmux, "Story")
        lines = text.splitlines()
        row = next(i for i, ln in enumerate(lines)
                   if "CRITICAL" in ln and "moved to vfio-pci while cold plug is disabled" in ln)
        assert "by containerd-shim[198] · default/sriov-pod" in lines[row + 1], text
        story = {ln.split()[0] for ln in lines if ln.startswith(" ") and ln.split()}
        assert {"who", "pod", "QEMU", "what"} <= story, text
        device = next(ln for ln in lines if "0000:01:10.0" in ln and "vfio-pci" in ln)
        assert "default/sriov-pod" in device and "containerd-shim[198]" in device, text
        assert all(len(ln) <= 80 for ln in lines)
