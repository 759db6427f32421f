"""`vfiowatch tui` in a real terminal (tmux) on this machine, driven by keys as a person would.

It reads the screen with `tmux capture-pane`: the machine's PCI devices, the sources' health,
and a synthetic bind uevent the test triggers (`echo "bind <uuid>" > .../uevent`: the kernel
only announces it, no driver moves; host-facts.md).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, vfiowatch_bin

pytestmark = pytest.mark.usefixtures("require_root")
PCI = "/sys/bus/pci/devices"


def _tmux(server: str, *args: str) -> str:
    """tmux on a server of its own (-L): a shared default server exits when its last session
    ends, and a new session racing that exit fails."""
    return subprocess.run(["tmux", "-L", server, *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout


class Terminal:
    """A tmux session running one command, 100x30, read with capture-pane."""

    def __init__(self, command: str) -> None:
        self.name = f"vfiowatch-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # The shell prints the exit status so the test can see that `q` ended the app.
        _tmux(self.name, "new-session", "-d", "-s", self.name, "-x", "100", "-y", "30",
              f"cd {shlex.quote(str(REPO))} && {command}; echo EXITED:$?; sleep 60")

    def screen(self) -> str:
        return _tmux(self.name, "capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        for k in keys:
            _tmux(self.name, "send-keys", "-t", self.name, k)
            time.sleep(0.15)  # a person types; Textual reads each key as its own event

    def type(self, text: str) -> None:
        _tmux(self.name, "send-keys", "-t", self.name, "-l", text)

    def wait_for(self, cond: Callable[[str], bool], timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.screen()
            if cond(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out; the screen was:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=10)
        # kill-server leaves the server's socket file behind
        (Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / self.name).unlink(
            missing_ok=True)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (deploy/setup-host.sh installs it)")
    term = Terminal(f"TERM=xterm-256color {shlex.quote(vfiowatch_bin())} tui")
    try:
        yield term
    finally:
        term.close()


def test_live_dashboard_in_tmux_shows_devices_health_and_a_synthetic_bind(terminal: Terminal) -> None:
    """The live dashboard lists every PCI device, each source's health, then the synthetic
    bind the test triggers (marked SYNTH); the filter, the device screen and q work by keys."""
    bdfs = sorted(os.listdir(PCI))
    screen = terminal.wait_for(lambda s: all(b in s for b in bdfs) and "uevent ✓" in s)
    # The header is as tall as its text (a source still starting wraps the rate to a 4th line).
    lines = screen.splitlines()
    header = "\n".join(lines[:next(i for i, line in enumerate(lines) if "Findings" in line)])
    for source in ("uevent", "links", "ebpf", "kata"):
        assert source in header, header
    assert "cold_plug_vfio=" in header and "lost 0" in header

    # The device to announce: one with a driver (the uevent then carries DRIVER=).
    bdf = next(b for b in bdfs if os.path.islink(os.path.join(PCI, b, "driver")))
    driver = os.path.basename(os.readlink(os.path.join(PCI, bdf, "driver")))
    with open(os.path.join(PCI, bdf, "uevent"), "w") as fh:
        fh.write(f"bind {uuid.uuid4()}")
    line = f"SYNTH {bdf} bound to {driver}"

    # Looked for through the filter: on a shared machine other processes' uevents can scroll
    # the unfiltered stream past the line before a capture sees it.
    terminal.keys("/")  # open the filter box
    terminal.type(f"dev:{bdf}")
    terminal.keys("Enter")  # apply: the stream shows this device only
    screen = terminal.wait_for(lambda s: f"filter dev:{bdf}" in s and line in s.split("Events", 1)[-1])
    events = screen.split("Events", 1)[1]
    assert line in events and "inventory" not in events

    terminal.keys("Enter")  # the focused stream's current event -> its device's screen
    terminal.wait_for(lambda s: "Driver timeline" in s and f" {bdf} " in s and driver in s)
    terminal.keys("Escape")  # back to the main screen
    terminal.wait_for(lambda s: "Devices" in s)
    terminal.keys("?")  # help
    terminal.wait_for(lambda s: "vfiowatch keys" in s)
    terminal.keys("Escape")  # close help; then wait, as a person would: a key right after ESC
    terminal.wait_for(lambda s: "vfiowatch keys" not in s)  # would read as Alt+key
    terminal.keys("q")  # quit
    terminal.wait_for(lambda s: "EXITED:0" in s)
