"""What the dashboard says about the #10162 incident: titled finding rows, one owner for every
view, the story pane, the stream in event time, and the display faults of issue 20."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from textual.pilot import Pilot

from diag import events as ev
from diag import render
from diag.core.state import HostState
from diag.events import replace
from diag.testing import ManualFeed
from diag.tui.app import VfioWatchApp
from diag.tui.screens import DeviceScreen, FindingScreen
from diag.tui.widgets import DevicesTable, EventLog, FindingsTable, HostHeader, StoryPane
from tests.tui.demo_app import VF, story_app, story_events, story_state
from tests.tui.test_interactions import screen_text

RULE = "vfio-bind-coldplug-disabled"
SIZES = [(80, 24), (120, 35), (160, 45)]


def drive(app: VfioWatchApp, script: Callable[[Pilot[None]], Awaitable[None]],
          size: tuple[int, int] = (80, 24)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(pilot)

    asyncio.run(main())


def the_finding(state: HostState) -> ev.Finding:
    return next(f for f in state.findings if f.rule == RULE)


def finding_row_text(text: str, title: str) -> str:
    """The visible lines of the finding row whose title is `title` (two lines when narrow)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if title in line and ("CRITICAL" in line or "critical" in line):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            return line + "\n" + (nxt if nxt.lstrip().startswith(("ongoing", "resolved")) else "")
    raise AssertionError(f"no finding row titled {title!r} on screen:\n{text}")


class TestFindingRow:
    @pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
    def test_the_row_leads_with_the_title_then_the_actor(self, size: tuple[int, int]) -> None:
        """At 80x24, 120x35 and 160x45 the critical finding's row shows the rule's whole title
        and the process that moved the VF (and its pod)."""
        app = story_app()
        f = the_finding(story_state())
        title = render.finding_title(f)
        actor = f"{f.actor.comm}[{f.actor.pid}]" if f.actor else "?"

        async def script(pilot: Pilot[None]) -> None:
            row = finding_row_text(screen_text(app), title)
            assert title in row and actor in row and "sriov-pod" in row, row

        drive(app, script, size=size)

    @pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
    def test_snapshot(self, snap_compare, size: tuple[int, int]) -> None:
        """The incident at its height (QEMU has just refused the VF), pixel for pixel."""
        assert snap_compare(story_app(), terminal_size=size)

    def test_severity_and_state_keep_their_whole_words_as_the_finding_moves_on(self) -> None:
        """A finding that opens as a warning, turns critical and resolves shows `CRITICAL` and
        `resolved` whole (after the demo they were cut to `critica  resolve`)."""
        base = story_state()
        f = the_finding(base)
        warning = replace(base, findings=(replace(f, severity=ev.Severity.WARNING),))
        critical = replace(base, findings=(f,))
        done = replace(base, findings=(replace(f, status="resolved", resolved_ns=f.last_ns + 1),))
        feed = ManualFeed(warning)
        app = VfioWatchApp(feed, hostname="h", kernel="k", render_interval=0)

        async def script(pilot: Pilot[None]) -> None:
            feed.push(critical)
            await pilot.pause()
            assert "CRITICAL" in screen_text(app)
            feed.push(done)
            await pilot.pause()
            text = screen_text(app)
            assert "resolved" in text and " resolve " not in text + " "
            assert "critical " in text or "critical\n" in text + "\n"

        drive(app, script, size=(160, 45))


class TestOneOwner:
    def test_device_row_device_story_and_finding_name_the_same_sandbox_and_actor(self) -> None:
        """The VF's row, its story screen and the finding name one pod, sandbox and actor (the
        row once said `-`, the story `unknown actor` and `not used by any known sandbox`)."""
        app = story_app()
        f = the_finding(story_state())
        assert f.actor is not None and f.sandbox_id and f.pod
        actor = f"{f.actor.comm}[{f.actor.pid}]"

        async def script(pilot: Pilot[None]) -> None:
            table = app.query_one(DevicesTable)
            row = [c.plain for c in table._rows[VF]]
            assert any(f.pod in c for c in row) and any(actor in c for c in row), row
            table.focus()
            table.move_cursor(row=table._order.index(VF))
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, DeviceScreen)
            text = screen_text(app)
            assert "unknown actor" not in text and "not used by any known sandbox" not in text
            assert f"by {actor}" in text  # the last move's line
            assert f.sandbox_id in text and f"{f.pod_namespace}/{f.pod}" in text
            await pilot.press("escape")
            app.query_one(FindingsTable).focus()
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, FindingScreen)
            detail = screen_text(app)
            assert actor in detail and f"{f.pod_namespace}/{f.pod}" in detail

        drive(app, script, size=(120, 60))


class TestStoryPane:
    def test_the_highlighted_findings_story_fills_the_free_space(self) -> None:
        """At 160x45 the story of the critical finding (who, pod, QEMU, what to do) is on the
        main screen, beside the devices, without pressing Enter."""
        app = story_app()

        async def script(pilot: Pilot[None]) -> None:
            pane = app.query_one(StoryPane)
            assert pane.finding is not None and pane.finding.rule == RULE
            text = screen_text(app)
            for word in ("who", "pod", "QEMU", "what to do", "failed as predicted"):
                assert word in text, word
            assert pane.region.height >= 30

        drive(app, script, size=(160, 45))

    def test_at_80x24_the_story_is_compact_but_says_who_pod_qemu_and_what_to_do(self) -> None:
        """A small terminal keeps one line per fact under the findings."""
        app = story_app()

        async def script(pilot: Pilot[None]) -> None:
            text = screen_text(app)
            for word in ("who", "pod", "QEMU", "what to do"):
                assert word in text, word
            assert app.query_one(StoryPane).region.bottom <= 24

        drive(app, script, size=(80, 24))

    def test_moving_the_cursor_shows_that_findings_story(self) -> None:
        """Down in the findings list: the pane tells the next finding."""
        app = story_app()

        async def script(pilot: Pilot[None]) -> None:
            table = app.query_one(FindingsTable)
            table.focus()
            first = app.query_one(StoryPane).finding
            await pilot.press("down")
            await pilot.pause()
            second = app.query_one(StoryPane).finding
            assert first is not None and second is not None and first != second
            assert second.finding_id == table.current_key

        drive(app, script, size=(120, 35))

    def test_a_resolved_finding_speaks_in_the_past_and_offers_no_remedy(self) -> None:
        """At the end of the story the finding says what happened, how it ended, and no longer
        says QEMU will fail nor what to do."""
        app = story_app(position=len(story_events()))

        async def script(pilot: Pilot[None]) -> None:
            text = screen_text(app)
            assert "was moved to vfio-pci while cold plug was disabled" in text
            table = app.query_one(FindingsTable)
            key = next(k for k, f in table.findings.items() if f.rule == RULE)
            table.focus()
            table.move_cursor(row=table._order.index(key))
            await pilot.pause()
            pane = app.query_one(StoryPane)
            assert pane.finding is not None and pane.finding.rule == RULE
            told = screen_text(app)
            assert "would have failed" in told or "failed as predicted" in told
            assert "will fail" not in told and "what to do" not in told
            assert "returned to host driver igbvf" in told or "unbound from vfio-pci" in told

        drive(app, script, size=(160, 45))


    def test_after_the_incident_the_critical_move_leads_the_resolved_findings(self) -> None:
        """Once everything has resolved, the first row and the story are the critical move (the
        cause), not whichever consequence resolved last (it was `QEMU exited with an error`)."""
        app = story_app(position=len(story_events()))

        async def script(pilot: Pilot[None]) -> None:
            table = app.query_one(FindingsTable)
            assert not any(f.active for f in table.findings.values())
            first = table.findings[table._order[0]]
            assert first.rule == RULE and first.severity is ev.Severity.CRITICAL
            pane = app.query_one(StoryPane)
            assert pane.finding is not None and pane.finding.finding_id == first.finding_id

        drive(app, script, size=(120, 35))


class TestStreamOrder:
    def test_a_late_record_is_shown_at_its_time_marked_late(self) -> None:
        """eBPF's record of a write arrives after the bind it caused: the stream puts it before
        the bind, where it happened, marked `late +N`."""
        bind = ev.DeviceBound(ts_ns=2_000_000_000, source="uevent", bdf=VF, driver="vfio-pci")
        write = ev.SysfsWriteObserved(
            ts_ns=1_900_000_000, source="ebpf", bdf=VF, control="driver_override",
            value="vfio-pci", path=f"/sys/bus/pci/devices/{VF}/driver_override", result=8,
            actor=ev.Process(pid=195, comm="containerd-shim"))
        later = ev.DeviceBound(ts_ns=3_000_000_000, source="uevent", bdf="0000:01:10.2",
                               driver="igbvf")
        s1 = HostState(ts_ns=bind.ts_ns, recent=(bind,))
        s2 = HostState(ts_ns=bind.ts_ns, recent=(bind, write))
        s3 = HostState(ts_ns=later.ts_ns, recent=(bind, write, later))
        feed = ManualFeed(s1)
        app = VfioWatchApp(feed, hostname="h", kernel="k", render_interval=0)

        async def script(pilot: Pilot[None]) -> None:
            feed.push(s2)
            await pilot.pause()
            feed.push(s3)
            await pilot.pause()
            log = app.query_one(EventLog)
            assert list(log.shown) == [write, bind, later]
            lines = [ln for ln in screen_text(app).splitlines() if ":00." in ln or ":01." in ln
                     or ":02." in ln or ":03." in ln]
            assert any("late +100ms" in ln and "driver_override" in ln for ln in lines), lines
            assert not any("late" in ln and "bound" in ln for ln in lines)

        drive(app, script, size=(120, 30))


    def test_the_cursor_stays_on_its_record_as_records_arrive_before_and_fall_out(self) -> None:
        """Reading back in the stream (cursor off the end): a late record put before the cursor
        and old records falling out of the bounded buffer leave the cursor on the same record;
        at the end (following) the newest is selected."""
        s = 1_000_000_000
        first = tuple(ev.DeviceBound(ts_ns=i * s, source="uevent", bdf=VF, driver="igbvf")
                      for i in range(1, 11))
        late = ev.SysfsWriteObserved(
            ts_ns=int(2.5 * s), source="ebpf", bdf=VF, control="unbind", value=VF,
            path=f"/sys/bus/pci/devices/{VF}/driver/unbind", result=12,
            actor=ev.Process(pid=195, comm="containerd-shim"))
        more = tuple(ev.DeviceBound(ts_ns=i * s, source="uevent", bdf=VF, driver="igbvf")
                     for i in range(11, 16))
        feed = ManualFeed(HostState(ts_ns=10 * s, recent=first))
        app = VfioWatchApp(feed, hostname="h", kernel="k", render_interval=0, max_events=12)

        async def script(pilot: Pilot[None]) -> None:
            log = app.query_one(EventLog)
            log.focus()
            await pilot.press("up", "up", "up")
            held = log.current
            assert held is first[6] and not log.follow
            feed.push(HostState(ts_ns=15 * s, recent=(*first, late, *more)))
            await pilot.pause()
            assert log.current is held
            assert len(log.shown) == 12 and log.shown[0].ts_ns == 4 * s  # the four oldest fell out
            await pilot.press("end")
            assert log.current is more[-1]

        drive(app, script, size=(120, 30))


class TestLiveHeader:
    def test_the_clock_ticks_and_a_quiet_host_reads_idle(self) -> None:
        """Live, with no event for 30 s the header's clock still moves and says `idle 30s`
        instead of freezing on the last event's time and rate."""
        t0 = 1_800_000_000 * 10**9
        now = [t0]
        e = ev.DeviceBound(ts_ns=t0, source="uevent", bdf=VF, driver="igbvf")
        feed = ManualFeed(HostState(ts_ns=t0, recent=(e,), events_total=1))
        app = VfioWatchApp(feed, hostname="h", kernel="k", clock=lambda: now[0])

        async def script(pilot: Pilot[None]) -> None:
            header = app.query_one(HostHeader)
            first = header.compose_text().plain
            assert "idle" not in first
            now[0] = t0 + 30 * 10**9
            await pilot.pause(1.3)  # one tick of the header's 1 s timer
            shown = str(header.render())
            assert "idle 30s" in shown
            assert render._clock(t0 + 30 * 10**9)[:8] in shown

        drive(app, script, size=(120, 30))


class TestPodFilter:
    @pytest.mark.parametrize("query", ["pod:sriov-pod", "ns:default", "pod:sriov-pod ns:default"])
    def test_pod_and_namespace_filter_the_stream(self, query: str) -> None:
        """`pod:` and `ns:` keep the events about that pod: its sandbox, its shim's writes and
        log lines, and its VF's kernel events; not the other VF's nor the host's links."""
        app = story_app()

        async def script(pilot: Pilot[None]) -> None:
            app.set_filter(query)
            log = app.query_one(EventLog)
            kinds = {e.kind for e in log.shown}
            assert {"sandbox_started", "sysfs_write_observed", "device_bound",
                    "log_line_matched"} <= kinds
            assert all(getattr(e, "bdf", VF) in (VF, None) for e in log.shown)
            assert not any(e.kind == "link_changed" and getattr(e, "ifname", "") == "lo"
                           for e in log.shown)
            assert query.split()[0] in str(log.border_title)

        drive(app, script, size=(120, 35))

    def test_pod_is_not_taken_for_a_sandbox_id(self) -> None:
        """`pod:NAME` is its own term (it was silently rewritten to `sandbox:`)."""
        from diag.tui.format import EventFilter

        f = EventFilter.parse("pod:sriov-pod ns:default")
        assert f.pods == ("sriov-pod",) and f.namespaces == ("default",) and f.sandboxes == ()
        assert f.describe() == "pod:sriov-pod ns:default"


def test_a_compact_story_line_too_long_ends_in_an_ellipsis() -> None:
    """At 80x24 a fact longer than the pane (QEMU's error, the remedy) ends in `…` on its one
    line, so it reads as cut, not as a sentence that stops mid-word (`not fo`)."""
    app = story_app()

    async def script(pilot: Pilot[None]) -> None:
        lines = screen_text(app).splitlines()
        qemu = next(ln for ln in lines if ln.lstrip().startswith("QEMU "))
        todo = next(ln for ln in lines if ln.lstrip().startswith("what to do"))
        assert qemu.rstrip().endswith("…") and todo.rstrip().endswith("…"), (qemu, todo)

    drive(app, script, size=(80, 24))
