"""The one reader of an agent's JSON log that live tests share: its lines parsed as they come.

`vfiowatch run` (a subprocess here, in a container in the image tier) writes one JSON object
per line; progress lines and tracebacks may sit between them, so only whole `{...}` lines count.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Line = dict[str, Any]


class AgentLog:
    """The JSON lines `proc` has written to `path`, and waits on them that fail with its tail."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes], *, poll_s: float = 0.05,
                 dump_stacks: bool = False) -> None:
        self.path = path
        self.proc = proc
        self.poll_s = poll_s
        # A silent agent is asked (SIGUSR1) to print its thread stacks before the test fails.
        self.dump_stacks = dump_stacks

    def lines(self) -> list[Line]:
        return [json.loads(raw) for raw in self.path.read_bytes().split(b"\n")
                if raw.startswith(b"{") and raw.endswith(b"}")]

    def matching(self, pred: Callable[[Line], bool], timeout: float) -> list[Line]:
        """Every line `pred` accepts, as soon as there is one; AssertionError with the log's
        tail (and the agent's thread stacks if it is alive and asked to) after `timeout`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = [d for d in self.lines() if pred(d)]
            if got:
                return got
            if self.proc.poll() is not None:
                break
            time.sleep(self.poll_s)
        if self.dump_stacks and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        text = self.path.read_text(errors="replace")
        stacks = text[text.find("Thread 0x"):] if "Thread 0x" in text else ""
        raise AssertionError(f"no matching log line within {timeout} s "
                             f"(rc={self.proc.poll()}):\n{(stacks or text)[-6000:]}")

    def wait_for(self, pred: Callable[[Line], bool], timeout: float = 10) -> Line:
        """The first line `pred` accepts (see `matching`)."""
        return self.matching(pred, timeout)[0]
