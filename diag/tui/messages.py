"""Provides the dashboard's messages: snapshots coming down, and the intents widgets send up."""

from __future__ import annotations

from textual.message import Message

from diag import events as ev
from diag.core.state import HostState


class SnapshotReady(Message, bubble=False):
    """A new HostState from the feed; posted from the feed's thread.

    Only the newest snapshot matters: a pending one is replaced by the next instead of both
    being rendered, so a slow frame drops stale snapshots rather than queueing them.
    """

    def __init__(self, state: HostState) -> None:
        super().__init__()
        self.state = state

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


class OpenDevice(Message):
    """Intent: show the device screen of `bdf`."""

    def __init__(self, bdf: str) -> None:
        super().__init__()
        self.bdf = bdf


class OpenFinding(Message):
    """Intent: show the detail of a finding."""

    def __init__(self, finding: ev.Finding) -> None:
        super().__init__()
        self.finding = finding
