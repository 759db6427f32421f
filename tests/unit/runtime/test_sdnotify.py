"""systemd's notify protocol without a library: READY/STATUS/WATCHDOG datagrams, watchdog period."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from diag.runtime.sdnotify import Notifier


def test_messages_reach_the_notify_socket(tmp_path: Path) -> None:
    """READY=1 with STATUS, then WATCHDOG=1, arrive as datagrams on $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": path})
        assert n.enabled and n.ready("1/1 sources up")
        assert srv.recv(4096) == b"READY=1\nSTATUS=1/1 sources up"
        assert n.watchdog() and srv.recv(4096) == b"WATCHDOG=1"
        n.close()
    finally:
        srv.close()


def test_abstract_socket_names_are_supported() -> None:
    """`@name` means the abstract namespace."""
    name = f"vfiowatch-test-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind("\0" + name)
    srv.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("x")
        assert srv.recv(100) == b"STATUS=x"
    finally:
        srv.close()


def test_watchdog_period_is_half_of_watchdog_usec() -> None:
    """WatchdogSec=20 -> ping every 10 s; another process's WATCHDOG_PID -> no pings."""
    assert Notifier({"WATCHDOG_USEC": "20000000"}).watchdog_s == 10.0
    assert Notifier({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_outside_systemd_everything_is_a_no_op() -> None:
    """No $NOTIFY_SOCKET: calls return False and do nothing."""
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog() and n.watchdog_s is None
