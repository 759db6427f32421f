"""Builds the dashboard over the recorded #10162 story (tests/fixtures/journals/lab-demo-story.jsonl,
a frozen copy of the demo) with the real rules, for the tests of what the dashboard says.

The stand-in rules of snapshot_app.py keep the layout tests still while rule wording moves; the
tests here are about the words themselves (the rule's title, the actor, the pod), which they
read from `diag.render`, so they follow the wording instead of pinning it.
"""

from __future__ import annotations

from pathlib import Path

from diag import events as ev
from diag.core.correlator import Correlator
from diag.core.state import HostState
from diag.runtime.playback import ReplayFeed, load_journal
from diag.tui.app import VfioWatchApp

STORY = Path(__file__).resolve().parents[1] / "fixtures" / "journals" / "lab-demo-story.jsonl"
VF = "0000:01:10.0"


def story_events() -> list[ev.Event]:
    events, _, _ = load_journal(STORY)
    return events


def position_after(events: list[ev.Event], signature: str) -> int:
    """Records applied just after the first log line with this signature."""
    for i, e in enumerate(events):
        if isinstance(e, ev.LogLineMatched) and e.signature == signature:
            return i + 1
    raise AssertionError(f"no {signature} line in {STORY.name}")


def qemu_failed_at() -> int:
    """The incident at its height: the VF on vfio-pci and QEMU has just refused it."""
    return position_after(story_events(), "qemu-bus-not-found")


def story_app(position: int | None = None, **kw: object) -> VfioWatchApp:
    events, header, stats = load_journal(STORY)
    feed = ReplayFeed(events, header=header, stats=stats, autoplay=False,
                      start_at=qemu_failed_at() if position is None else position)
    return VfioWatchApp(feed, hostname="sriov-lab", kernel="6.12.95+deb12-amd64", mode="REPLAY",
                        **kw)  # type: ignore[arg-type]


def story_state(position: int | None = None) -> HostState:
    core = Correlator()
    events = story_events()
    for e in events[:qemu_failed_at() if position is None else position]:
        core.feed(e)
    return core.snapshot()
