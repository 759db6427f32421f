"""Pilot tests of the dashboard: keys, mouse, screens, filters, pause, replay controls, escaping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from diag import events as ev
from diag.core.state import HostState
from diag.events import replace
from diag.testing import ManualFeed
from diag.tui.app import VfioWatchApp
from diag.tui.messages import SnapshotReady
from diag.tui.screens import DeviceScreen, FindingScreen, HelpScreen
from diag.tui.widgets import DevicesTable, EventLog, FindingsTable, HostHeader
from tests.tui.snapshot_app import INCIDENT_AT, make_app, replay_feed, states

VF = "0000:01:10.0"


def drive(app: VfioWatchApp, script: Callable[[Pilot[None]], Awaitable[None]],
          size: tuple[int, int] = (80, 24)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(pilot)

    asyncio.run(main())


def screen_text(app: VfioWatchApp) -> str:
    """What the terminal shows, as plain text lines rebuilt from the SVG export's positions."""
    import html
    import re

    svg = app.export_screenshot()
    cells = re.findall(r'<text[^>]*? x="([\d.]+)" y="([\d.]+)" textLength="([\d.]+)"[^>]*>([^<]*)</text>', svg)
    rows: dict[float, dict[int, str]] = {}
    char_w = 0.0
    for x, y, length, raw in cells:
        content = html.unescape(raw).replace("\xa0", " ")
        if content and not char_w:
            char_w = float(length) / len(content)
        if content:
            rows.setdefault(float(y), {})[round(float(x) / char_w)] = content
    lines = []
    for y in sorted(rows):
        line = ""
        for col in sorted(rows[y]):
            line = line.ljust(col) + rows[y][col]
        lines.append(line.rstrip())
    return "\n".join(lines)


class TestMainScreen:
    def test_first_frame_shows_header_devices_and_stream(self) -> None:
        """The first snapshot fills the header (Kata, sources), the device tree and the stream."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            header = app.query_one(HostHeader).compose_text().plain
            assert "kata-qemu" in header and "cold_plug_vfio=no-port" in header
            assert "uevent ✓" in header and "ebpf ✓ kprobe" in header
            table = app.query_one(DevicesTable)
            assert table.row_count == 9
            assert table._order.index(VF) == table._order.index("0000:01:00.0") + 1  # VF under PF
            assert len(app.query_one(EventLog).shown) == INCIDENT_AT
            assert app.frames >= 1

        drive(app, script)

    def test_fits_80x24(self) -> None:
        """At 80x24 the header, the three panels and the footer are all on screen."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            for sel in ("#header", "#devices", "#findings", "#events", "KeyBar"):
                region = app.query_one(sel).region
                assert region.height > 0 and region.bottom <= 24 and region.right <= 80, sel

        drive(app, script)

    def test_wide_terminal_puts_the_story_beside_devices_and_events(self) -> None:
        """A big terminal: findings across the top, the story of the highlighted one in a
        column to the right of the devices and the stream, with wide columns; the device list
        is sized to its rows, not to half the screen."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            devices, findings = app.query_one("#devices").region, app.query_one("#findings").region
            story, events = app.query_one("#story").region, app.query_one("#events").region
            assert findings.y < devices.y and findings.width > devices.width
            assert story.x > devices.x and story.y == devices.y and story.bottom >= events.bottom - 1
            assert devices.height <= 9 + 3  # nine devices, the header row and the border
            assert "SR-IOV" in [str(c.label) for c in app.query_one(DevicesTable).columns.values()]

        drive(app, script, size=(230, 50))

    def test_empty_snapshot_renders(self) -> None:
        """An empty HostState (no sources, devices or findings) renders without error."""
        app = VfioWatchApp(ManualFeed(HostState()), hostname="h", kernel="k")

        async def script(pilot: Pilot[None]) -> None:
            text = screen_text(app)
            assert "not reported" in text and "waiting for the first snapshot" in text
            assert "assumed default" in text

        drive(app, script)

    def test_findings_are_counted_and_coloured_by_state(self) -> None:
        """Ongoing findings are counted by severity in the panel title; resolved ones after."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            title = str(app.query_one(FindingsTable).border_title)
            assert "2 ongoing" in title and "1 critical" in title and "1 warning" in title

        drive(app, script)


class TestKeys:
    def test_enter_on_device_opens_its_story_and_esc_returns(self) -> None:
        """Enter on the VF shows who moved it from igbvf to vfio-pci; Esc goes back."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            table = app.query_one(DevicesTable)
            table.move_cursor(row=table._order.index(VF))
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, DeviceScreen) and app.screen.bdf == VF
            text = screen_text(app)
            assert "igbvf → (none)" in text and "(none) → vfio-pci" in text
            assert "containerd-shim[4242]" in text
            assert "test-vfio-bind" in text
            await pilot.press("escape")
            assert not isinstance(app.screen, DeviceScreen)

        drive(app, script, size=(120, 50))

    def test_enter_on_finding_shows_evidence_explanation_remedy(self) -> None:
        """Selecting a finding shows its evidence, explanation and remedy."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            app.query_one(FindingsTable).focus()
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, FindingScreen)
            text = screen_text(app)
            assert "Evidence (1, in time order)" in text and "Stand-in explanation" in text
            assert "Stand-in remedy" in text

        drive(app, script, size=(100, 40))

    def test_slash_filters_the_stream_by_device_and_esc_clears(self) -> None:
        """`/dev:10.2` keeps only that device's events; Esc clears the filter."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            await pilot.press("slash")
            assert app.query_one("#filter", Input).has_focus
            await pilot.press(*"dev:01:10.2", "enter")
            log = app.query_one(EventLog)
            assert log.shown and all(getattr(e, "bdf", None) == "0000:01:10.2" for e in log.shown)
            assert "dev:01:10.2" in str(log.border_title)
            await pilot.press("escape")
            assert len(log.shown) == INCIDENT_AT

        drive(app, script)

    @pytest.mark.parametrize(("query", "kinds"), [
        ("kind:bound", {"device_bound", "device_unbound"}),
        ("sandbox:web-7d4f9", {"sandbox_started", "sysfs_write_observed"}),
        ("source:ebpf", {"sysfs_write_observed"}),
    ])
    def test_filter_by_kind_sandbox_source(self, query: str, kinds: set[str]) -> None:
        """Kind, sandbox (id or pod) and source filters keep only matching events."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            app.set_filter(query)
            shown = {e.kind for e in app.query_one(EventLog).shown}
            assert shown and shown <= kinds | {"device_bound", "device_unbound", "link_removed",
                                               "netdev_removed", "vfio_device_added"}
            assert shown & kinds

        drive(app, script)

    def test_f_shows_findings_only(self) -> None:
        """`f` hides devices and events; `f` again brings them back."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            await pilot.press("f")
            assert not app.query_one("#devices").display and not app.query_one("#events").display
            assert app.query_one("#story").region.height > 10  # the story fills the rest
            await pilot.press("f")
            assert app.query_one("#devices").display

        drive(app, script)

    def test_p_pauses_the_live_view(self) -> None:
        """While paused, new snapshots are held back; resuming shows the newest."""
        snaps = states()
        feed = ManualFeed(snaps[5])
        app = VfioWatchApp(feed, hostname="h", kernel="k", render_interval=0)

        async def script(pilot: Pilot[None]) -> None:
            await pilot.pause()
            assert app.state is snaps[5]
            await pilot.press("p")
            feed.push(snaps[10])
            await pilot.pause()
            assert app.state is snaps[5]
            assert "PAUSED" in app.query_one(HostHeader).compose_text().plain
            await pilot.press("p")
            await pilot.pause()
            assert app.state is snaps[10]

        drive(app, script)

    def test_global_keys_work_from_a_detail_screen(self) -> None:
        """`/` and `f` on a device screen go back to the dashboard and act there."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            await pilot.press("enter")  # the first device's story
            assert isinstance(app.screen, DeviceScreen)
            await pilot.press("slash")
            assert not isinstance(app.screen, DeviceScreen)
            assert app.query_one("#filter", Input).has_focus
            await pilot.press("escape", "enter", "f")
            assert not app.query_one("#devices").display

        drive(app, script)

    def test_snapshot_while_a_screen_is_being_pushed(self) -> None:
        """A snapshot that lands between push and compose of a detail screen is not an error."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            app.push_screen(DeviceScreen(VF))
            app._render_state(app.state)  # before the screen has composed
            await pilot.pause()
            assert isinstance(app.screen, DeviceScreen)

        drive(app, script)

    def test_help_and_quit(self) -> None:
        """`?` opens the help, Esc closes it, `q` quits."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            assert "findings only" in screen_text(app)
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("q")

        drive(app, script)
        assert app.return_code == 0

    def test_command_palette_opens_a_device(self) -> None:
        """Ctrl+P, type the device, Enter: its screen opens."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"Open device 0000:01:10.2")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert isinstance(app.screen, DeviceScreen) and app.screen.bdf == "0000:01:10.2"

        drive(app, script, size=(100, 30))

    def test_mouse_selects_and_opens_a_device(self) -> None:
        """Clicking a row selects it; clicking it again opens the device screen."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            table = app.query_one(DevicesTable)
            row = table._order.index("0000:01:10.2")
            await pilot.click(DevicesTable, offset=(3, 2 + row))  # border-top, header row, then rows
            assert table.current_key == "0000:01:10.2"
            await pilot.click(DevicesTable, offset=(3, 2 + row))
            await pilot.pause()
            assert isinstance(app.screen, DeviceScreen) and app.screen.bdf == "0000:01:10.2"

        drive(app, script, size=(120, 50))


class TestReplay:
    def test_step_seek_and_play(self) -> None:
        """`.` steps, `,` steps back, `<`/`>` seek to start/end, space plays."""
        feed = replay_feed(5)
        app = VfioWatchApp(feed, mode="REPLAY")

        async def script(pilot: Pilot[None]) -> None:
            await pilot.press("full_stop")
            assert feed.status().position == 6
            await pilot.press("comma", "comma")
            assert feed.status().position == 4
            await pilot.press("greater_than_sign")
            assert feed.status().done
            await pilot.pause(0.3)
            assert app.query_one(DevicesTable)._rows[VF][1].plain == "igbvf"
            await pilot.press("less_than_sign")
            assert feed.status().position == 0
            await pilot.press("plus")
            assert feed.status().speed == 2
            await pilot.press("space")
            assert feed.status().playing
            await pilot.press("p")
            assert not feed.status().playing
            assert "paused" in app.query_one(HostHeader).compose_text().plain

        drive(app, script)


    def test_n_and_shift_n_jump_between_findings_and_g_goes_to_a_time(self) -> None:
        """`n` pauses just after the record at which the next finding opened, `N` goes back to
        the previous one, and `g` + a recorded time + Enter jumps there; a bad time is refused
        with a notice, the prompt kept open."""
        from tests.tui.snapshot_app import stand_in_correlator
        feed = replay_feed(0)
        opened = []
        c = stand_in_correlator()
        for i, e in enumerate(feed.events):
            if any(f.status == "open" for f in c.feed(e)):
                opened.append(i + 1)
        assert len(opened) >= 2
        app = VfioWatchApp(feed, mode="REPLAY")
        target = feed.events[7]

        async def script(pilot: Pilot[None]) -> None:
            await pilot.press("n")
            assert feed.status().position == opened[0] and not feed.status().playing
            await pilot.press("n")
            assert feed.status().position == opened[1]
            await pilot.press("N")
            assert feed.status().position == opened[0]
            await pilot.press("g")
            box = app.query_one("#goto", Input)
            assert box.has_focus
            await pilot.press(*"teatime", "enter")
            await pilot.pause()
            assert box.has_class("visible") and feed.status().position == opened[0]
            offset = (target.ts_ns - feed.events[0].ts_ns) / 1e9
            box.value = ""
            await pilot.press(*f"+{offset:.9f}", "enter")
            await pilot.pause()
            assert not box.has_class("visible")
            assert feed.status().position == feed.position_at(target.ts_ns) >= 8

        drive(app, script)


class TestSnapshots:
    def test_stale_snapshots_are_replaced_not_queued(self) -> None:
        """A burst of snapshots renders far fewer frames than it posts, ending on the newest."""
        snaps = states()
        feed = ManualFeed()
        app = VfioWatchApp(feed, render_interval=0.05)

        async def script(pilot: Pilot[None]) -> None:
            for _ in range(20):
                for s in snaps:
                    app.post_message(SnapshotReady(s))
            await pilot.pause(0.3)
            assert app.state is snaps[-1]
            assert app.frames < 20 * len(snaps) // 4

        drive(app, script)
        assert SnapshotReady(snaps[0]).can_replace(SnapshotReady(snaps[1]))

    def test_live_the_header_redraws_counts_at_most_twice_a_second_and_health_at_once(self) -> None:
        """Live (not a replay), a frame whose header differs only in the rate and count keeps
        the header drawn less than 0.5 s ago and shows the newest count by the interval's end;
        a source going down shows in the very next frame."""
        from diag.core.state import SourceHealth

        def snap(n: int, up: bool = True) -> HostState:
            health = SourceHealth(name="uevent", up=up, reason="" if up else "crashed: boom")
            return HostState(ts_ns=n * 1_000_000_000, events_total=n, sources=(health,))

        feed = ManualFeed()
        app = VfioWatchApp(feed, render_interval=0.01)

        def header() -> str:
            return screen_text(app).split("Story", 1)[0]

        async def script(pilot: Pilot[None]) -> None:
            feed.push(snap(10))
            await pilot.pause(0.1)
            assert "10 ev" in header()
            feed.push(snap(20))
            await pilot.pause(0.1)
            assert "10 ev" in header() and app.state.events_total == 20
            await pilot.pause(0.6)
            assert "20 ev" in header()
            feed.push(snap(30, up=False))
            await pilot.pause(0.1)
            assert "uevent ✗" in header() and "30 ev" in header()

        drive(app, script, size=(120, 30))

    def test_the_feed_hears_once_when_the_first_frame_with_devices_is_painted(self) -> None:
        """A feed with `first_frame_shown` (the live one starts its other sources then) is told
        once, after a frame holding devices is painted, not for a frame without them."""

        class Feed(ManualFeed):
            def __init__(self) -> None:
                super().__init__()
                self.shown: list[int] = []

            def first_frame_shown(self) -> None:
                self.shown.append(app.frames)

        with_devices = next(s for s in states() if s.devices)
        feed = Feed()
        app = VfioWatchApp(feed, render_interval=0.01)

        async def script(pilot: Pilot[None]) -> None:
            feed.push(HostState(ts_ns=with_devices.ts_ns))
            await pilot.pause(0.2)
            assert app.frames >= 1 and feed.shown == []
            feed.push(with_devices)
            await pilot.pause(0.2)
            feed.push(with_devices)
            await pilot.pause(0.2)
            assert len(feed.shown) == 1 and 2 <= feed.shown[0] < app.frames

        drive(app, script)


class TestHostileStrings:
    def test_markup_and_escapes_render_literally(self) -> None:
        """An ifname like `[red]x` shows as typed; ESC and BEL show as \\x1b, \\x07."""
        base = states()[INCIDENT_AT - 1]
        host = ev.NetnsRef(inode=1, is_host=True)
        evil = (
            ev.LinkChanged(ts_ns=base.ts_ns + 1, source="links", ifindex=9, ifname="[red]x",
                           netns=host, bdf=VF, operstate="UP"),
            ev.LinkChanged(ts_ns=base.ts_ns + 2, source="links", ifindex=10,
                           ifname="\x1b[31mevil", netns=host, operstate="UP"),
            ev.LogLineMatched(ts_ns=base.ts_ns + 3, source="kata", signature="sig",
                              text="[bold]boom\x07[/bold] \x1b]0;title\x07"),
        )
        views = tuple(replace(d, netdev="[red]x") if d.bdf == VF else d for d in base.devices)
        state = replace(base, recent=base.recent + evil, devices=views, ts_ns=base.ts_ns + 3)
        app = VfioWatchApp(ManualFeed(state), hostname="[blink]h", kernel="k\x1bc")

        async def script(pilot: Pilot[None]) -> None:
            await pilot.pause()
            text = screen_text(app)
            assert "[red]x" in text
            assert "\\x1b[31mevil" in text
            assert "[bold]boom\\x07[/bold]" in text
            assert "[blink]h" in text and "k\\x1bc" in text
            assert "\x1b" not in text and "\x07" not in text

        drive(app, script, size=(140, 40))


class TestStormFrames:
    def test_a_resize_that_changes_the_columns_keeps_the_device_cursor(self) -> None:
        """A narrower terminal drops columns of the device table (they are laid out again): the
        cursor stays on the device it was on, not back on the first row."""
        app = make_app()

        async def script(pilot: Pilot[None]) -> None:
            table = app.query_one(DevicesTable)
            columns = len(table.columns)
            table.move_cursor(row=table._order.index(VF))
            await pilot.pause()
            await pilot.resize_terminal(80, 24)
            await pilot.pause()
            assert len(table.columns) < columns  # the column set did change
            assert table.current_key == VF

        drive(app, script, size=(140, 40))

    def test_the_device_story_is_retold_for_its_own_events_only(self) -> None:
        """Open on a device, a snapshot that only brings other devices' events leaves its story
        as it was (not told and laid out again); one that brings its own event shows it."""
        base = states()[INCIDENT_AT - 1]
        host = ev.NetnsRef(inode=1, is_host=True)
        other = ev.LinkChanged(ts_ns=base.ts_ns + 1, source="links", ifindex=50, ifname="veth50",
                               netns=host, operstate="DOWN")
        mine = ev.LinkChanged(ts_ns=base.ts_ns + 2, source="links", ifindex=51,
                              ifname="mine-flap", netns=host, bdf=VF, operstate="DOWN")
        feed = ManualFeed(base)
        app = VfioWatchApp(feed, hostname="h", kernel="k", render_interval=0)

        async def script(pilot: Pilot[None]) -> None:
            await pilot.pause()
            app.show_device(VF)
            await pilot.pause()
            story = app.screen.query_one("#detail-story")
            told: list[object] = []
            update = story.update
            story.update = lambda *a, **k: (told.append(a), update(*a, **k))  # type: ignore[method-assign]
            feed.push(replace(base, ts_ns=other.ts_ns, recent=(*base.recent, other)))
            await pilot.pause()
            assert told == []
            feed.push(replace(base, ts_ns=mine.ts_ns, recent=(*base.recent, other, mine)))
            await pilot.pause()
            assert len(told) == 1
            assert "mine-flap" in screen_text(app)

        drive(app, script, size=(120, 60))

    def test_records_in_time_order_are_appended_and_late_marks_fall_out_with_theirs(self) -> None:
        """A batch in time order goes to the end of the bounded stream; a late record's mark
        is forgotten when the record falls out of the buffer."""
        s = 1_000_000_000
        first = tuple(ev.DeviceBound(ts_ns=i * s, source="uevent", bdf=VF, driver="igbvf")
                      for i in range(1, 4))
        late = ev.DeviceUnbound(ts_ns=2 * s + 1, source="uevent", bdf=VF)
        more = tuple(ev.DeviceBound(ts_ns=i * s, source="uevent", bdf=VF, driver="igbvf")
                     for i in range(4, 12))
        feed = ManualFeed(HostState(ts_ns=3 * s, recent=(*first, late)))
        app = VfioWatchApp(feed, hostname="h", kernel="k", render_interval=0, max_events=5)

        async def script(pilot: Pilot[None]) -> None:
            await pilot.pause()
            log = app.query_one(EventLog)
            assert list(log.shown) == [first[0], first[1], late, first[2]]
            assert id(late) in log.late
            feed.push(HostState(ts_ns=11 * s, recent=(*first, late, *more)))
            await pilot.pause()
            assert list(log.shown) == list(more[-5:])
            assert log.late == {}

        drive(app, script, size=(120, 30))
