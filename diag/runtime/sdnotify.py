"""Provides Notifier: systemd's sd_notify protocol (READY, WATCHDOG, STATUS, STOPPING), no library.

systemd passes `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) to a
`Type=notify` service; each message is one datagram of `KEY=VALUE` lines. `$WATCHDOG_USEC`
(with `$WATCHDOG_PID`) says how often `WATCHDOG=1` must arrive; we send it at half that period,
and only while the agent's own health check passes, so a wedged core gets the service
restarted. Outside systemd every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends sd_notify datagrams when running under systemd; does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = None
        if addr.startswith("@"):
            self._addr = "\0" + addr[1:]
        elif addr.startswith("/"):
            self._addr = addr
        self._sock: socket.socket | None = None
        self.watchdog_s: float | None = None
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), None when not asked for."""
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of `KEY=VALUE` lines; False when not under systemd or on error."""
        if self._addr is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self._addr)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *( [f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *( [f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
