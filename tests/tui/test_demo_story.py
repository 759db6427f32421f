"""`vfiowatch demo` tells Kata #10162 as a guided story from the bundled recording, and ends on
a state that reads as finished: the move, QEMU's refusal, the rollback, the pod's failure, what
to do; the sources shown as stopped, not failed."""

from __future__ import annotations

import asyncio
import time

from diag import events as ev
from diag.commands.demo import chapters, demo_journal_path
from diag.runtime.playback import ReplayFeed, load_journal
from diag.tui.app import VfioWatchApp
from diag.tui.widgets import HostHeader
from tests.tui.test_interactions import screen_text


def test_the_bundled_recording_holds_every_turning_point_in_order() -> None:
    """The chapters come out of the recorded events (not a script): the sandbox, the move with
    its three attributed writes, QEMU's bus error, the rollback, containerd's failure, then
    what to do; each holds after the records it names."""
    events, _, _ = load_journal(demo_journal_path())
    story = chapters(events)
    text = [c.caption for c in story]
    assert len(story) == 7 and [c.position for c in story] == sorted(c.position for c in story)
    assert "sriov-pod" in text[1] and "no-port" in text[1]
    assert "containerd-shim[" in text[2] and "driver_override, unbind, drivers_probe" in text[2]
    assert "Bus '<unknown PCIePortBusPrefix: >0' not found" in text[3]
    assert "returns to igbvf" in text[4]
    assert "RunPodSandbox" in text[5]
    assert text[6].startswith("7/7  What to do") and 'cold_plug_vfio = "root-port"' in text[6]
    bind = next(i for i, e in enumerate(events)
                if isinstance(e, ev.DeviceBound) and e.driver == "vfio-pci")
    assert story[2].position > bind


def test_the_replay_holds_at_each_chapter_and_the_guide_plays_on() -> None:
    """Playing the demo stops at the first chapter with its caption shown, and goes on by
    itself after the hold to the end. The screen is sampled while it plays, never judged after
    a sleep as long as the hold (on a loaded machine the hold may be over by then)."""
    events, header, stats = load_journal(demo_journal_path())
    story = chapters(events)
    feed = ReplayFeed(events, header=header, stats=stats, speed=50, max_gap_s=0.05,
                      stops={c.position for c in story})
    app = VfioWatchApp(feed, hostname="h", kernel="k", mode="DEMO",
                       guide=[(c.position, c.caption) for c in story], hold_s=0.6)

    async def main() -> None:
        async with app.run_test(size=(120, 35)) as pilot:
            held_with_caption = False
            end = time.monotonic() + 40
            while not feed.status().done and time.monotonic() < end:
                st = feed.status()
                if st.position == story[0].position and not st.playing:
                    held_with_caption |= story[0].caption[:20] in screen_text(app)
                await pilot.pause(0.02)
            assert held_with_caption
            assert feed.status().done  # played on from every hold by itself
            until = time.monotonic() + 5
            while "7/7  What to do" not in screen_text(app) and time.monotonic() < until:
                await pilot.pause(0.05)
            assert "7/7  What to do" in screen_text(app)

    asyncio.run(main())


def test_the_end_reads_as_finished_not_broken() -> None:
    """At the end of the recording the VF is back on igbvf, the #10162 finding is resolved and
    told in the past tense, and the sources the agent stopped read `stopped`, not a red ✗."""
    events, header, stats = load_journal(demo_journal_path())
    feed = ReplayFeed(events, header=header, stats=stats, autoplay=False, start_at=len(events))
    app = VfioWatchApp(feed, hostname="h", kernel="k", mode="DEMO")

    async def main() -> None:
        async with app.run_test(size=(160, 45)) as pilot:
            await pilot.pause()
            header = app.query_one(HostHeader)
            head = header.compose_text().plain
            assert "✗" not in head and "stopped" in head
            # As tall as its text: no blank line kept from the first frame's longer header.
            assert header.region.height == len(head.splitlines())
            text = screen_text(app)
            assert "was moved to vfio-pci while cold plug was disabled" in text
            vf = app.state.device("0000:01:10.0")
            assert vf is not None and vf.driver == "igbvf"
            assert not any(f.active and f.rule == "vfio-bind-coldplug-disabled"
                           for f in app.state.findings)

    asyncio.run(main())
