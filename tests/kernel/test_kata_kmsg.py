"""Without a journal the kata source reads the kernel's lines from /dev/kmsg, from its end."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from diag.sources.kata import loglines

pytestmark = pytest.mark.usefixtures("require_root")


def test_kmsg_follower_reads_new_records_only() -> None:
    """A marker line written to /dev/kmsg (not a catalogue message) is read back once; older ones are not."""
    k = loglines.KmsgFollower("/dev/kmsg")
    if not k.start():
        pytest.skip(k.reason)
    try:
        marker = f"vfiowatch-test kmsg follower {uuid.uuid4()}"
        fd = os.open("/dev/kmsg", os.O_WRONLY)
        try:
            os.write(fd, f"{marker}\n".encode())
        finally:
            os.close(fd)
        got: list[loglines.LogRecord] = []
        end = time.monotonic() + 5
        while not any(marker in r.message for r in got) and time.monotonic() < end:
            got += [r for r in (loglines.decode_kmsg(b, loglines.boot_time_ns(Path("/proc")))
                                for b in k.poll()) if r is not None]
            time.sleep(0.02)
        hits = [r for r in got if marker in r.message]
        assert len(hits) == 1 and hits[0].ts_ns and abs(hits[0].ts_ns - time.time_ns()) < 60 * 10**9
        assert loglines.to_event(hits[0], ts_ns=0) is None
    finally:
        k.stop()
