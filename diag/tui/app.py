"""Provides VfioWatchApp, the dashboard: header, devices, findings and the event stream.

The app is a pure consumer: a feed (diag.core.state.SnapshotFeed, live or replay, handed in by
the CLI) calls back with HostState snapshots from its own thread; they arrive as SnapshotReady
messages that replace each other while pending, and are rendered at most every
`render_interval` seconds. Widgets get data down (`update_from`) and send intents up
(OpenDevice, OpenFinding, EventLog.Selected).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar, cast

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container
from textual.events import Resize
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Static

from diag import events as ev
from diag import render
from diag.common.when import parse_when
from diag.core.state import HostState, Playback, SnapshotFeed
from diag.tui import format as fmt
from diag.tui.messages import OpenDevice, OpenFinding, SnapshotReady
from diag.tui.screens import DetailScreen, DeviceScreen, FindingScreen, HelpScreen
from diag.tui.widgets import (
    DevicesTable,
    EventLog,
    FindingsTable,
    HostHeader,
    KeyBar,
    StoryPane,
    finding_order,
)

_D = TypeVar("_D", bound=DetailScreen)

MAIN_KEYS = [
    ("/", "Filter", "app.filter"),
    ("f", "Findings", "app.findings_only"),
    ("p", "Pause", "app.toggle_pause"),
    ("⏎", "Detail", "app.noop"),
    ("?", "Help", "app.help"),
    ("q", "Quit", "app.quit"),
]


class VfioWatchApp(App[None]):
    """The vfiowatch dashboard over any SnapshotFeed."""

    TITLE = "vfiowatch"
    CSS = """
    Screen { layout: vertical; }
    #body { height: 1fr; layout: vertical; }
    .panel { border-top: solid $primary; border-title-align: left; border-title-style: bold; }
    .panel:focus-within { border-top: solid $accent; }
    #findings { height: auto; max-height: 9; }
    #story { height: auto; max-height: 7; border-top: solid $error; }
    #story.calm { border-top: solid $success; }
    #devices { height: 1fr; min-height: 4; }
    #events { height: 1fr; min-height: 3; }
    Screen.wide #body { layout: grid; grid-size: 2 3; grid-columns: 3fr 2fr; grid-rows: auto auto 1fr; }
    Screen.wide #findings { column-span: 2; max-height: 10; }
    Screen.wide #devices { height: auto; max-height: 16; }
    Screen.wide #story { row-span: 2; height: 1fr; max-height: 100%; border-left: solid $primary; }
    Screen.wide #events { height: 1fr; }
    Screen.no-findings #findings { display: none; }
    Screen.no-findings #story { max-height: 2; }
    #guide { display: none; height: auto; background: $boost; color: $text; padding: 0 1; text-style: bold; }
    #guide.visible { display: block; }
    #filter, #goto { dock: bottom; display: none; margin-bottom: 1; }
    #filter.visible, #goto.visible { display: block; }
    """
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("f", "findings_only", "Findings"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        # Ctrl+C quits, as in every terminal program (Textual's default only says how to).
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("space", "replay_toggle", "Play/pause", show=False),
        Binding("full_stop", "replay_step(1)", "Step", show=False),
        Binding("comma", "replay_step(-1)", "Step back", show=False),
        Binding("right_square_bracket", "replay_seek(10)", "Seek +10%", show=False),
        Binding("left_square_bracket", "replay_seek(-10)", "Seek -10%", show=False),
        Binding("greater_than_sign", "replay_seek(100)", "End", show=False),
        Binding("less_than_sign", "replay_seek(-100)", "Start", show=False),
        Binding("plus", "replay_speed(2)", "Faster", show=False),
        Binding("minus", "replay_speed(0.5)", "Slower", show=False),
        Binding("n", "replay_finding(1)", "Next finding", show=False),
        Binding("N", "replay_finding(-1)", "Previous finding", show=False),
        Binding("g", "replay_goto", "Go to time", show=False),
    ]

    def __init__(
        self,
        feed: SnapshotFeed,
        *,
        hostname: str = "",
        kernel: str = "",
        mode: str = "LIVE",
        render_interval: float = 0.05,
        max_events: int = 2000,
        clock: Callable[[], int] | None = None,
        guide: Sequence[tuple[int, str]] = (),
        hold_s: float = 0.0,
        own_gc: bool = False,
    ) -> None:
        """`clock`: wall time in ns for a live view (the header ticks with it); None in a
        replay, whose time is the journal's. `guide`: (position, caption) chapters of a guided
        replay (the demo): the caption of the chapter reached is shown above the panels, and
        where the replay held at a chapter it plays on after `hold_s` seconds. `own_gc`: the
        app owns its process (the CLI), and tunes the garbage collector for short pauses
        after the first frame (`_settle_gc`); tests, which run many apps in one process,
        leave it alone."""
        super().__init__()
        self.feed = feed
        self.hostname = hostname
        self.kernel = kernel
        self.mode = mode
        self.render_interval = render_interval
        self.max_events = max_events
        self.clock = clock
        self.state = HostState()
        self.guide = sorted(guide)
        self.hold_s = hold_s
        self.own_gc = own_gc
        self._chapter = -1
        self._resume_at: float | None = None
        self.selected: str | None = None
        """finding_id of the finding whose story is shown (None: the first one)."""
        self.paused = False
        self.frames = 0
        """Snapshots rendered (benchmarks and tests read it)."""
        self.first_frame_at: float | None = None
        """time.monotonic() when the first frame with data was painted (benchmarks read it)."""
        self._devices_shown = False
        self._pending: HostState | None = None
        self._render_timer_set = False
        self._last_render = 0.0
        self._subscribed = False
        self._titles: dict[str, Text] = {}
        self._findings_only = False

    def _main(self) -> Screen[object]:
        """The dashboard's own screen (detail and help screens are pushed over it)."""
        return self.screen_stack[0]

    def _to_main(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    @property
    def playback(self) -> Playback | None:
        return self.feed if isinstance(self.feed, Playback) else None

    @property
    def header_interval_s(self) -> float:
        """How often the headers may redraw what changes on every frame (0: every frame, in a
        replay, whose header says where it is)."""
        return self.HEADER_INTERVAL_S if self.playback is None else 0.0

    # ---- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield HostHeader(self.hostname, self.kernel, self.mode, clock=self.clock, id="header",
                         min_interval_s=self.header_interval_s)
        yield Static(id="guide")
        with Container(id="body"):
            yield FindingsTable(id="findings", classes="panel")
            yield StoryPane(id="story", classes="panel")
            yield DevicesTable(id="devices", classes="panel")
            yield EventLog(max_events=self.max_events, id="events", classes="panel")
        yield Input(placeholder="filter events: dev:01:10.0 kind:bound pod:NAME ns:NAME sandbox:ID source:uevent synthetic words (Enter applies, Esc cancels)", id="filter")
        yield Input(placeholder="go to recorded time: 10:41:07 (UTC, the journal's day), 2026-11-27T10:41:07Z or +90 (Enter jumps, Esc cancels)", id="goto")
        yield KeyBar(MAIN_KEYS)

    def on_mount(self) -> None:
        self._main().query_one("#devices", DevicesTable).border_title = "Devices"
        self._main().query_one("#findings", FindingsTable).border_title = "Findings"
        self._main().query_one("#events", EventLog).border_title = "Events"
        self._main().query_one("#story", StoryPane).border_title = "Story"
        self._layout_for(self.size.width, self.size.height)
        self._render_state(self.state)
        self._main().query_one("#devices", DevicesTable).focus()
        if self.clock is not None:
            self.set_interval(1.0, self._tick)
        if self.guide and self.playback is not None:
            self.set_interval(0.2, self._guide_tick)
        if not self._subscribed:
            self._subscribed = True
            self.feed.subscribe(self._from_feed)
            self.feed.start()

    def on_unmount(self) -> None:
        self.feed.stop()

    def _from_feed(self, state: HostState) -> None:
        # Called on the feed's thread; post_message is thread-safe and SnapshotReady coalesces.
        self.post_message(SnapshotReady(state))

    def on_resize(self, event: Resize) -> None:
        self._layout_for(event.size.width, event.size.height)

    def _tick(self) -> None:
        """Once a second, live: the header's clock, rate and idle mark move on a quiet host."""
        self.screen_stack[0].query_one("#header", HostHeader).tick()
        if isinstance(self.screen, DetailScreen):
            for header in self.screen.query(HostHeader):
                header.tick()

    def _guide_tick(self) -> None:
        """Show the caption of the chapter the replay has reached; where it held there by
        itself, play on after `hold_s` seconds (space goes on at once)."""
        pb = self.playback
        if pb is None:
            return
        st = pb.status()
        idx = -1
        for i, (pos, _) in enumerate(self.guide):
            if pos <= st.position:
                idx = i
        if idx != self._chapter:
            self._chapter = idx
            bar = self._main().query_one("#guide", Static)
            if idx >= 0:
                bar.update(Text(self.guide[idx][1]))
            bar.set_class(idx >= 0, "visible")
            held = idx >= 0 and self.guide[idx][0] == st.position and not st.playing and not st.done
            self._resume_at = time.monotonic() + self.hold_s if held and self.hold_s > 0 else None
        if self._resume_at is not None and time.monotonic() >= self._resume_at:
            self._resume_at = None
            if not st.playing and not st.done:
                pb.play()
                self._update_note_only()

    @property
    def wide(self) -> bool:
        return self._main().has_class("wide")

    def _layout_for(self, width: int, height: int) -> None:
        main = self._main()
        wide = width >= 140 and height >= 30
        main.set_class(wide, "wide")
        body = main.query_one("#body")
        story = main.query_one("#story", StoryPane)
        # Wide: the story to the right of devices and events (grid order: findings, devices,
        # story, events); narrow: right under the findings.
        anchor = main.query_one("#devices" if wide else "#findings")
        body.move_child(story, after=anchor)
        if self.state.ts_ns or self.state.devices:
            self.call_after_refresh(self._render_state, self.state)

    # ---- data down ----------------------------------------------------------------------------

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self._pending = message.state
        if self.paused and self.playback is None:
            self._update_note_only()
            return
        self._schedule()

    def _schedule(self) -> None:
        if self._render_timer_set:
            return
        wait = self.render_interval - (time.monotonic() - self._last_render)
        if wait <= 0:
            self._flush()
        else:
            self._render_timer_set = True
            self.set_timer(wait, self._flush)

    def _flush(self) -> None:
        self._render_timer_set = False
        state = self._pending
        if state is None:
            return
        self._pending = None
        self._last_render = time.monotonic()
        if not self.is_running:
            return  # a snapshot still pending while the app closes: its widgets are going
        self._render_state(state)

    def _render_state(self, state: HostState) -> None:
        self.state = state
        note = self.status_note
        main = self.screen_stack[0]
        main.query_one("#header", HostHeader).update_from(state, note)
        main.query_one("#devices", DevicesTable).update_from(state)
        findings = main.query_one("#findings", FindingsTable)
        findings.update_from(state)
        self._set_title(findings, fmt.findings_title(state))
        if main.has_class("no-findings") != (not state.findings):
            main.set_class(not state.findings, "no-findings")
            if self._findings_only:
                self._apply_findings_only()
        self._render_story(state)
        events = main.query_one("#events", EventLog)
        events.update_from(state)
        self._set_title(events, self._events_title(events))
        if isinstance(self.screen, DetailScreen):
            self.screen.update_from(state)
        if state.ts_ns or state.devices or state.sources:
            self.frames += 1
            if self.first_frame_at is None:
                self.first_frame_at = 0.0
                self.call_after_refresh(self._first_painted)
        if state.devices and not self._devices_shown:
            self._devices_shown = True
            self.call_after_refresh(self._devices_painted)

    def _render_story(self, state: HostState) -> None:
        main = self.screen_stack[0]
        pane = main.query_one("#story", StoryPane)
        by_id = {f.finding_id: f for f in state.findings}
        first = finding_order(state.findings)[:1]
        f = by_id.get(self.selected or "") or (first[0] if first else None)
        compact = not self.wide and not self._findings_only
        pane.update_from(f, bool(state.devices), compact)
        pane.set_class(f is None or not f.active, "calm")
        if f is None:
            self._set_title(pane, Text("Story"))
        else:
            title = Text("Story · ", style="bold")
            title.append(fmt.safe(render.finding_title(f), 60))
            self._set_title(pane, title)

    @on(FindingsTable.Highlighted)
    def finding_highlighted(self, message: FindingsTable.Highlighted) -> None:
        if message.finding_id != self.selected:
            self.selected = message.finding_id
            self._render_story(self.state)

    def _set_title(self, widget: Widget, title: Text) -> None:
        """Set a panel's border title only when it changed: setting it repaints the whole
        panel (every row of a table), which most frames of a storm need not do."""
        if self._titles.get(widget.id or "") != title:
            self._titles[widget.id or ""] = title
            widget.border_title = title

    def _first_painted(self) -> None:
        self.first_frame_at = time.monotonic()
        if self.own_gc:
            self.set_timer(self.GC_SETTLE_S, self._settle_gc)

    def _devices_painted(self) -> None:
        """Tell the feed that the first frame with devices is on screen, if it asks to know
        (`first_frame_shown`: the live feed starts the sources that frame does not need)."""
        shown = getattr(self.feed, "first_frame_shown", None)
        if callable(shown):
            shown()

    # The garbage collector's full passes walk every object the process holds: Textual's,
    # the modules', the snapshots'. Under a storm they came every few seconds, 60-180 ms each
    # with the GIL held, and were the slowest key presses and frames. Once the first frame is
    # painted, what exists then (nearly all of it lives as long as the process) is frozen out
    # of the collector's passes, and the youngest generation is collected ten times less often:
    # fewer and shorter passes; cycles are still collected.
    GC_THRESHOLDS = (50_000, 20, 10)
    HEADER_INTERVAL_S = 0.5
    """Live, the header's rate, count and clock are redrawn at most this often (HostHeader)."""
    GC_SETTLE_S = 1.0
    """After the first frame, not in its way: a full collection is tens of ms, and the sources
    the live dashboard starts after its first frame have imported their modules by then."""

    def _settle_gc(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*self.GC_THRESHOLDS)

    def _update_note_only(self) -> None:
        self.screen_stack[0].query_one("#header", HostHeader).update_from(self.state, self.status_note)

    def _events_title(self, log: EventLog) -> Text:
        out = Text("Events ", style="bold")
        out.append(f"{len(log.shown)} shown", style="")
        if not log.filter.empty:
            out.append(" · filter ", style="")
            out.append(log.filter.describe(), style="bold yellow")
        if not log.follow:
            out.append(" · scrolled (End follows)", style="dim")
        return out

    @property
    def status_note(self) -> Text:
        pb = self.playback
        if pb is not None:
            st = pb.status()
            out = Text("▶ playing" if st.playing else ("■ end" if st.done else "⏸ paused"),
                       style="bold green" if st.playing else "bold yellow")
            out.append(f" {st.position}/{st.total} ×{st.speed:g}")
            return out
        if self.paused:
            return Text("⏸ PAUSED (p resumes)", style="bold yellow")
        return Text("● live", style="bold green") if self.mode == "LIVE" else Text()

    # ---- intents ------------------------------------------------------------------------------

    # One instance of each detail screen is installed and re-shown: composing a screen (and
    # its widgets) on every Enter cost more than the 100 ms key budget under load.

    def show_device(self, bdf: str) -> None:
        screen = self._detail("device", DeviceScreen)
        screen.bdf = bdf
        self._show(screen, "device")

    def show_finding(self, finding: ev.Finding) -> None:
        screen = self._detail("finding", FindingScreen)
        screen.finding = finding
        self._show(screen, "finding")

    def _detail(self, name: str, cls: type[_D]) -> _D:
        if not self.is_screen_installed(name):
            self.install_screen(cls(), name)
        return cast(_D, self.get_screen(name))

    def _show(self, screen: DetailScreen, name: str) -> None:
        if self.screen is screen:
            screen.update_from(self.state)
            return
        if screen in self.screen_stack:  # under a help screen or the other detail screen
            self._to_main()
        self.push_screen(name)  # its on_screen_resume renders the current state

    @on(OpenDevice)
    def open_device(self, message: OpenDevice) -> None:
        self.show_device(message.bdf)

    @on(OpenFinding)
    def open_finding(self, message: OpenFinding) -> None:
        self.show_finding(message.finding)

    @on(EventLog.Selected)
    def open_event(self, message: EventLog.Selected) -> None:
        e = message.event
        if isinstance(e, ev.Finding):
            self.show_finding(e)
            return
        bdf = fmt.event_bdf(e)
        if bdf is not None:
            self.show_device(bdf)
        else:
            self.notify(fmt.safe(render.stream(e), 200), title=e.kind, markup=False)

    def _open_prompt(self, selector: str) -> None:
        """Show an empty prompt (the filter or go-to box) at the bottom and focus it."""
        self._to_main()
        box = self._main().query_one(selector, Input)
        box.value = ""
        box.add_class("visible")
        box.focus()

    def _close_prompt(self, selector: str) -> bool:
        """Hide a prompt that is open (focus back on the events); False if it was not open."""
        box = self._main().query_one(selector, Input)
        if not box.has_class("visible"):
            return False
        box.remove_class("visible")
        self._main().query_one("#events", EventLog).focus()
        return True

    def action_filter(self) -> None:
        self._open_prompt("#filter")

    @on(Input.Submitted, "#filter")
    def apply_filter(self, message: Input.Submitted) -> None:
        self.set_filter(message.value)
        self._close_prompt("#filter")

    def set_filter(self, query: str) -> None:
        self._to_main()
        events = self._main().query_one("#events", EventLog)
        events.set_filter(fmt.EventFilter.parse(query))
        self._set_title(events, self._events_title(events))

    def action_clear_filter(self) -> None:
        if self._close_prompt("#goto") or self._close_prompt("#filter"):
            return
        events = self._main().query_one("#events", EventLog)
        if not events.filter.empty:
            self.set_filter("")

    # `f` (findings only) as inline styles on the five nodes it changes, not a class on the
    # screen: a screen class re-applies the stylesheet to every node, and a restyled table
    # drops its rendered rows (together two thirds of the key's cost).
    FINDINGS_ONLY: dict[str, dict[str, object]] = {
        "#devices": {"display": "none"},
        "#events": {"display": "none"},
        "#body": {"layout": "vertical"},
        "#findings": {"height": "auto", "max_height": "50%"},
        "#story": {"height": "1fr", "max_height": "100%"},
    }

    def action_findings_only(self) -> None:
        self._to_main()
        self._findings_only = not self._findings_only
        self._apply_findings_only()
        if self._findings_only:
            self._main().query_one("#findings", FindingsTable).focus()
        self._render_story(self.state)

    def _apply_findings_only(self) -> None:
        main = self._main()
        on = self._findings_only
        for selector, rules in self.FINDINGS_ONLY.items():
            styles = main.query_one(selector).styles
            for rule, value in rules.items():
                if rule == "max_height" and selector == "#story" and main.has_class("no-findings"):
                    value = 2  # `Screen.no-findings #story` keeps the story pane short
                setattr(styles, rule, value if on else None)

    def action_toggle_pause(self) -> None:
        pb = self.playback
        if pb is not None:
            self.action_replay_toggle()
            return
        self.paused = not self.paused
        if not self.paused and self._pending is not None:
            self._flush()
        else:
            self._update_note_only()

    def action_noop(self) -> None:
        """The Enter hint only tells; Enter acts on the focused list."""

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_replay_toggle(self) -> None:
        pb = self.playback
        if pb is None:
            return
        self._resume_at = None
        if pb.status().playing:
            pb.pause()
        else:
            pb.play()
        self._update_note_only()

    def action_replay_step(self, n: int) -> None:
        if (pb := self.playback) is not None:
            pb.step(n)

    def action_replay_seek(self, percent: int) -> None:
        if (pb := self.playback) is None:
            return
        st = pb.status()
        pos = st.position + (st.total * percent) // 100
        pb.seek(max(0, min(st.total, pos)))

    def action_replay_finding(self, direction: int) -> None:
        if (pb := self.playback) is None:
            return
        if not pb.next_finding(direction):
            self.notify("no finding opens further on" if direction > 0 else
                        "no finding opened earlier", title="replay", markup=False)
        self._update_note_only()

    def action_replay_goto(self) -> None:
        if self.playback is not None:
            self._open_prompt("#goto")

    @on(Input.Submitted, "#goto")
    def apply_goto(self, message: Input.Submitted) -> None:
        pb = self.playback
        if pb is None:
            return
        try:
            when = parse_when(message.value, pb.first_ts_ns())
        except ValueError as exc:
            self.notify(fmt.safe(str(exc), 300), title="go to", severity="error", markup=False)
            return
        pb.seek_time(when)
        self._close_prompt("#goto")
        self._update_note_only()

    def action_replay_speed(self, factor: float) -> None:
        if (pb := self.playback) is not None:
            pb.set_speed(max(0.125, min(1024.0, pb.status().speed * factor)))
            self._update_note_only()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action.startswith("replay_"):
            return self.playback is not None
        return True

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Findings only", "Show only the findings (toggle)", self.action_findings_only)
        yield SystemCommand("Filter events", "Filter the event stream (dev:, kind:, pod:, ns:, sandbox:, source:)", self.action_filter)
        yield SystemCommand("Clear filter", "Show every event again", lambda: self.set_filter(""))
        yield SystemCommand("Synthetic events only", "Show only synthetic kernel events", lambda: self.set_filter("synthetic"))
        yield SystemCommand("Pause / resume", "Freeze the view (live) or the playback (replay)", self.action_toggle_pause)
        yield SystemCommand("Help", "Show the keys", self.action_help)
        for view, _ in fmt.device_order(self.state.devices):
            bdf = view.bdf
            label = f"{bdf} {view.driver or '(none)'} {fmt.device_name(view, 30)}"
            yield SystemCommand(f"Open device {fmt.safe(label, 60)}", "Driver timeline, links, sandbox, findings",
                                lambda b=bdf: self.post_message(OpenDevice(b)))
            yield SystemCommand(f"Filter events by device {bdf}", "Only this device's events",
                                lambda b=bdf: self.set_filter(f"dev:{b}"))
        if self.playback is not None:
            yield SystemCommand("Replay: play / pause", "Toggle playback", self.action_replay_toggle)
            yield SystemCommand("Replay: step", "Apply the next record", lambda: self.action_replay_step(1))
            yield SystemCommand("Replay: seek to start", "Back to the first record", lambda: self.action_replay_seek(-100))
            yield SystemCommand("Replay: seek to end", "Apply every record", lambda: self.action_replay_seek(100))
