"""Provides StopRelay: the runtime's stop Event turned into a pollable fd, so sources sleep in
poll() without timeouts and still stop at once."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable


class StopRelay:
    """An eventfd that becomes readable when `stop` is set, plus optional callbacks.

    One helper thread blocks on `stop` (it re-checks every `linger_s` whether the relay was
    closed, so a source that returns on its own leaves no thread behind for long). Cost: one
    idle thread per source, no busy wake-ups.
    """

    def __init__(self, stop: threading.Event, *callbacks: Callable[[], None],
                 linger_s: float = 5.0) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stop = stop
        self._callbacks = callbacks
        self._closed = threading.Event()
        self._linger_s = linger_s
        self._thread = threading.Thread(target=self._wait, name="vfiowatch-stop-relay", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        while not self._stop.wait(self._linger_s):
            if self._closed.is_set():
                break
        else:
            if not self._closed.is_set():
                for fn in self._callbacks:  # before the write: whoever wakes sees the flags set
                    fn()
                with contextlib.suppress(OSError):
                    os.eventfd_write(self.fd, 1)
            self._closed.wait()
        # Only this thread closes the fd, so no write can ever reach a reused descriptor.
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def close(self) -> None:
        """Done with the relay (call once the fd is no longer polled); the fd is released by
        the helper thread."""
        self._closed.set()
