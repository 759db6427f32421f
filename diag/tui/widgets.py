"""Provides the dashboard's widgets; each takes data down through `update_from(state)`.

Widgets hold no references to sources, sinks or the correlator, do no I/O while rendering and
post intents (OpenDevice, OpenFinding) for the screen or app to act on.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from operator import attrgetter

from rich.console import RenderableType
from rich.text import Text
from textual.binding import Binding
from textual.events import Click, Resize
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.widgets import DataTable, Static

from diag import events as ev
from diag import render
from diag.core.state import HostState
from diag.events import replace
from diag.tui import format as fmt
from diag.tui import story
from diag.tui.messages import OpenDevice, OpenFinding


class HostHeader(Static):
    """Host, kernel, Kata handlers, each source's health, events/s, losses and play state.

    Line one is a list of pieces (`pieces`), each a small method, so a new piece (an exposure
    badge, say) is one method and one line there. In live mode `clock` gives the wall time:
    the clock ticks and events/s decays on a quiet host, which then reads `idle 42s`, not hung.
    """

    DEFAULT_CSS = """
    HostHeader { height: auto; background: $panel; padding: 0 1; }
    """

    IDLE_AFTER_NS = 5 * fmt.NS
    """A live host with no event for this long is shown as idle."""

    def __init__(self, hostname: str, kernel: str, mode: str,
                 clock: Callable[[], int] | None = None, min_interval_s: float = 0.0,
                 **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.hostname = hostname
        self.kernel = kernel
        self.mode = mode
        self.clock = clock
        """Wall clock (ns) for a live view; None for replays (their time is the journal's)."""
        self.min_interval_s = min_interval_s
        """Live, under a stream, the rate, the count and the clock change on every frame: they
        are redrawn at most this often (the header was a fifth of a frame's CPU). What must show
        at once (a source's health, a loss, Kata's configuration, the status note) does."""
        self.state = HostState()
        self.status_note = Text()
        self._shown: Text | None = None
        self._urgent: object = None
        self._drawn_at = float("-inf")
        self._later: Timer | None = None

    def update_from(self, state: HostState, status_note: Text | None = None) -> None:
        self.state = state
        if status_note is not None:
            self.status_note = status_note
        urgent = (tuple((s.name, s.up, s.mode, s.reason, s.lost, s.lost_incidents)
                        for s in state.sources),
                  state.kata_configs, state.kata_exposure, state.lost_total, self.status_note)
        wait = self._drawn_at + self.min_interval_s - time.monotonic()
        if urgent == self._urgent and wait > 0:
            if self._later is None:
                self._later = self.set_timer(wait, self._redraw)
            return
        self._urgent = urgent
        self._redraw()

    def _redraw(self) -> None:
        if self._later is not None:
            self._later.stop()
            self._later = None
        self._drawn_at = time.monotonic()
        self._show(self.compose_text())

    def tick(self) -> None:
        """The clock moved (live): redraw the time, the rate and the idle mark."""
        if self.clock is not None:
            self._redraw()

    def _show(self, text: Text) -> None:
        # Without a layout: the height is set explicitly (compose_text), and a layout of the
        # whole screen on every frame of a storm cost more than everything else in it.
        if text != self._shown:
            self._shown = text
            self.update(text, layout=False)

    def now_ns(self) -> int:
        """The time the header shows: the wall clock live, the snapshot's time in a replay."""
        return self.clock() if self.clock is not None else self.state.ts_ns

    # ---- line one: its pieces, in order --------------------------------------------------------

    def pieces(self) -> list[Text]:
        return [self._title(), self._host(), self._time(), self._note()]

    def _title(self) -> Text:
        out = Text("vfiowatch ", style="bold")
        out.append(" " + fmt.safe(self.mode, 12) + " ", style="bold reverse")
        return out

    def _host(self) -> Text:
        out = Text(fmt.safe(self.hostname or "?", 32), style="bold")
        out.append(" " + fmt.safe(self.kernel or "?", 32), style="dim")
        return out

    def _time(self) -> Text:
        return Text(fmt.clock(self.now_ns()) + " UTC")

    def _note(self) -> Text:
        return self.status_note

    # ---- the rate: events/s, or idle ------------------------------------------------------------

    def rate_piece(self) -> Text:
        st = self.state
        out = Text("│ ", style="dim")
        now = self.now_ns()
        last = fmt.last_event_ns(st)
        if self.clock is not None and st.ts_ns and now - last >= self.IDLE_AFTER_NS:
            out.append(f"idle {fmt.duration(now - last)}", style="cyan")
        else:
            live = now if self.clock is not None else None
            out.append(fmt.rate_text(fmt.events_per_second(st, now_ns=live)))
        out.append(f" · {st.events_total} ev · lost ")
        out.append(str(st.lost_total), style="bold red" if st.lost_total else "green")
        return out

    def compose_text(self) -> Text:
        st = self.state
        width = max(40, (self.size.width or 80) - 2)
        one = Text()
        for piece in self.pieces():
            if piece:
                if one:
                    one.append("  ")
                one.append_text(piece)
        two = fmt.kata_text(st.kata_configs, path_limit=max(12, width - 50), exposure=st.kata_exposure)
        items: list[Text] = []
        for src in fmt.sources_for_header(st):
            # Narrow terminals keep only eBPF's mode (it says how writes are attributed).
            show_mode = width >= 110 or src.name == "ebpf"
            items.append(fmt.source_text(src if show_mode else replace(src, mode=""),
                                         reason_limit=28 if width < 100 else 60))
        items.append(self.rate_piece())
        lines = [one, two]
        cur = Text()
        for item in items:
            if cur and cur.cell_len + 2 + item.cell_len > width:
                lines.append(cur)
                cur = Text()
            if cur:
                cur.append("  ")
            cur.append_text(item)
        lines.append(cur)
        for line in lines:
            line.truncate(width, overflow="ellipsis")
        if self.styles.height is None or self.styles.height.value != len(lines):
            # Explicit: an auto height kept the line count of the first frame (sources not yet
            # reported wrap to a fourth line) after the text had shrunk.
            self.styles.height = len(lines)
        return Text("\n").join(lines)

    def on_resize(self) -> None:
        self._show(self.compose_text())


class KeyBar(Static):
    """The key hints along the bottom; a click on a hint runs its action.

    A plain line instead of Textual's Footer: the Footer re-styles one widget per binding on
    every screen switch, which cost tens of milliseconds per key on the 10,000 events/s bench.
    """

    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $panel; padding: 0 1; }
    """

    def __init__(self, keys: Sequence[tuple[str, str, str]], **kw: object) -> None:
        """`keys`: (key label, description, action run on the screen or app) each."""
        super().__init__(**kw)  # type: ignore[arg-type]
        self.keys = list(keys)
        self._spans: list[tuple[int, int, str]] = []
        line = Text(no_wrap=True, overflow="ellipsis")
        x = 1  # the left padding
        for label, desc, action in self.keys:
            start = x
            line.append(label, style="bold yellow")
            line.append(" " + desc + "  ")
            x += len(label) + len(desc) + 3
            self._spans.append((start, x - 2, action))
        line.append("^p", style="bold yellow")
        line.append(" palette")
        self._spans.append((x, x + 10, "app.command_palette"))
        self.update(line)

    def on_click(self, event: Click) -> None:
        for start, end, action in self._spans:
            if start <= event.x < end:
                event.stop()
                self.call_later(self.screen.run_action, action)
                return


Column = tuple[str, str, int, int]
"""(key, label, width, priority): lower priorities are kept first when space runs out; a width
of 0 marks the flexible column, which takes what is left (dropped below FLEX_MIN)."""
FLEX_MIN = 10


def fit_columns(width: int, columns: Sequence[Column], flex_min: int = FLEX_MIN) -> list[tuple[str, str, int]]:
    """The columns that fit in `width` cells (each costs its width plus 2 of cell padding), in
    their given order, with the flexible one widened to fill the rest."""
    room = width
    keep: set[str] = set()
    flex: str | None = None
    for key, _label, w, _prio in sorted(columns, key=lambda c: c[3]):
        if w == 0:
            if room - 2 >= flex_min:
                flex = key
                keep.add(key)
                room -= 2 + flex_min
            continue
        if room >= w + 2:
            keep.add(key)
            room -= w + 2
    out = []
    for key, label, w, _prio in columns:
        if key in keep:
            out.append((key, label, (flex_min + max(0, room)) if key == flex else w))
    return out


class _Table(DataTable[Text]):
    """A DataTable whose rows are keyed and updated in place, keeping the cursor on its key.

    Columns get explicit widths (`fit_columns`): a cell that grows later (`warning` becoming
    `critical`, `ongoing` becoming `resolved`) is never cut to the width of its first value.
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kw)  # type: ignore[arg-type]
        self._rows: dict[str, tuple[Text, ...]] = {}
        self._order: list[str] = []
        self._columns_for: object = None
        self._row_height = 1
        self._state: HostState | None = None
        self._resized_width = -1
        self._cursor_key: str | None = None

    def update_from(self, state: HostState) -> None:
        raise NotImplementedError

    @property
    def room(self) -> int:
        """Cells available for the columns (the vertical scrollbar's gutter left out)."""
        return max(20, (self.size.width or 80) - 2)

    def on_resize(self, event: Resize) -> None:
        # DataTable forgets every rendered row on a resize. Its rows do not depend on the
        # height (the columns have fixed widths): keep them when only the height changed, as
        # when `f` hides and shows the table, which otherwise renders every cell again.
        if event.size.width == self._resized_width:
            event.prevent_default()
            return
        self._resized_width = event.size.width
        # Column sets and truncation depend on the width: redo them from the last snapshot.
        if self._state is not None:
            self.update_from(self._state)

    def set_columns(self, columns: Sequence[tuple[str, str, int]], row_height: int = 1) -> bool:
        layout = (tuple(columns), row_height)
        if layout == self._columns_for:
            return False
        self._columns_for = layout
        self._row_height = row_height
        self._cursor_key = self._current_key()  # set_rows puts the cursor back on its row
        self.clear(columns=True)
        for key, label, width in columns:
            self.add_column(label, key=key, width=width)
        self._rows = {}
        self._order = []
        return True

    def set_rows(self, rows: Sequence[tuple[str, tuple[Text, ...]]]) -> None:
        keys = [k for k, _ in rows]
        if keys == self._order:
            columns = list(self.columns)
            for key, cells in rows:
                old = self._rows.get(key)
                if old == cells:
                    continue
                for i, cell in enumerate(cells):
                    if old is None or old[i] != cell:
                        self.update_cell(key, columns[i], cell)
                self._rows[key] = cells
            return
        current = self._current_key() or self._cursor_key
        self._cursor_key = None
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key, height=self._row_height)
        self._rows = dict(rows)
        self._order = keys
        if current in self._rows:
            self.move_cursor(row=keys.index(current), animate=False)

    def _current_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    @property
    def current_key(self) -> str | None:
        return self._current_key()


DEVICE_COLUMNS: list[Column] = [
    ("bdf", "BDF", 14, 0), ("role", "SR-IOV", 8, 8), ("driver", "Driver", 9, 1),
    ("ovr", "Override", 9, 5), ("netdev", "Netdev", 7, 4), ("grp", "Grp", 3, 7),
    ("pod", "Pod / sandbox", 17, 2), ("by", "Moved by", 20, 3), ("since", "Since", 6, 6),
    ("name", "Device", 0, 9),
]


class DevicesTable(_Table):
    """PFs with their VFs nested: BDF, driver (vfio-pci stands out), the pod or sandbox and who
    moved it last (`Model.owner`, as the finding says), override, netdev, ..."""

    DEFAULT_CSS = """
    DevicesTable { overflow-x: hidden; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)
        self._made: dict[str, tuple[object, tuple[Text, ...]]] = {}
        """bdf -> (what its row was made from, its cells): a row is made again only when its
        device, its depth, the columns or its `since` text changed (a storm changes few)."""

    def update_from(self, state: HostState) -> None:
        self._state = state
        cols = fit_columns(self.room, DEVICE_COLUMNS)
        self.set_columns(cols)
        widths = {k: w for k, _, w in cols}
        rows = []
        made: dict[str, tuple[object, tuple[Text, ...]]] = {}
        for view, depth in fmt.device_order(state.devices):
            d = view.device
            since = fmt.since(view, state.ts_ns)
            basis = (view, depth, cols, since)
            old = self._made.get(d.bdf)
            if old is not None and old[0] == basis:
                made[d.bdf] = old
                rows.append((d.bdf, old[1]))
                continue
            cells = {
                "bdf": Text(("└ " if depth else "") + d.bdf, style="" if depth else "bold"),
                "role": Text(fmt.role_tag(view), style="dim"),
                "name": Text(fmt.device_name(view, widths.get("name", 8))),
                "driver": fmt.driver_text(view.driver),
                "ovr": fmt.text(view.driver_override or "-", fmt.VFIO_STYLE if view.driver_override == "vfio-pci" else "dim", 12),
                "netdev": fmt.netdev_text(view, 20),
                "grp": Text("-" if d.iommu_group is None else str(d.iommu_group)),
                "pod": fmt.pod_text(view, widths.get("pod", 16)),
                "by": fmt.mover_text(view.actor, widths.get("by", 20)),
                "since": Text(since, style="dim"),
            }
            row = tuple(cells[k] for k, _, _ in cols)
            made[d.bdf] = (basis, row)
            rows.append((d.bdf, row))
        self._made = made
        self.set_rows(rows)

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        if message.row_key.value:
            self.post_message(OpenDevice(message.row_key.value))


FINDING_COLUMNS: list[Column] = [
    ("sev", "Severity", 8, 0), ("st", "State", 8, 5), ("what", "What happened", 0, 1),
    ("who", "Who", 20, 2), ("pod", "Pod", 18, 3), ("where", "Device", 12, 4),
    ("last", "Last seen", 12, 6),
]
FINDING_COLUMNS_NARROW: list[Column] = [
    ("sev", "Severity", 8, 0), ("what", "What happened · who · pod", 0, 1),
    ("where", "Device", 7, 2),
]
TWO_LINE_BELOW = 110
"""Narrower than this, each finding takes two lines: the title, then who and which pod."""


def finding_order(findings: Sequence[ev.Finding]) -> list[ev.Finding]:
    """Ongoing first, then resolved; in each the most severe first, and among equals the one
    that began first: the cause (the move) before its consequences (QEMU's error about it). So
    once an incident is over, its story still opens on the critical move, not on whichever
    consequence resolved last."""
    return sorted(findings, key=lambda f: (not f.active, -f.severity.rank, f.first_ns,
                                           _trigger_ns(f), f.finding_id))


def _trigger_ns(f: ev.Finding) -> int:
    """When the fact that defines the finding happened (`<rule>/<key>/<trigger_ns>` ids)."""
    tail = f.finding_id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else f.first_ns


def who_text(f: ev.Finding, limit: int = 24) -> Text:
    return fmt.mover_text(f.actor, limit) if f.actor else Text("-", style="dim")


def finding_pod_text(f: ev.Finding, limit: int = 24) -> Text:
    label = render.pod_label(f.pod, f.pod_namespace)
    if label:
        return fmt.text(label, "magenta" if f.active else "dim magenta", limit)
    if f.sandbox_id:
        return fmt.text("sandbox " + f.sandbox_id[:12], "magenta" if f.active else "dim magenta", limit)
    return Text("-", style="dim")


def short_bdf(bdf: str | None) -> str:
    """`01:10.0` for a device in PCI domain 0 (what lspci prints), the full address otherwise."""
    if not bdf:
        return "-"
    return bdf[5:] if bdf.startswith("0000:") else bdf


class FindingsTable(_Table):
    """Findings, ongoing first then resolved: the rule's short title (what happened), who and
    which pod, then the device; two lines a finding on narrow terminals. Highlighting one shows
    its story beside or below; Enter opens its evidence."""

    DEFAULT_CSS = """
    FindingsTable { overflow-x: hidden; }
    """

    class Highlighted(Message):
        """The finding under the cursor changed (the story pane follows it)."""

        def __init__(self, finding_id: str | None) -> None:
            super().__init__()
            self.finding_id = finding_id

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)
        self.findings: dict[str, ev.Finding] = {}
        self._made: dict[str, tuple[tuple[ev.Finding, object], tuple[Text, ...]]] = {}
        """finding_id -> ((the finding, the columns) its row was made from, its cells)."""

    def update_from(self, state: HostState) -> None:
        self._state = state
        two = self.room < TWO_LINE_BELOW
        findings = finding_order(state.findings)
        # The title is what the row is for: it keeps its whole width, the other columns fit
        # around it (or go).
        longest = max((len(render.finding_title(f)) for f in findings), default=30)
        cols = fit_columns(self.room, FINDING_COLUMNS_NARROW if two else FINDING_COLUMNS,
                           flex_min=min(max(30, longest), 56))
        self.set_columns(cols, row_height=2 if two else 1)
        widths = {k: w for k, _, w in cols}
        rows = []
        self.findings = {}
        made: dict[str, tuple[object, tuple[Text, ...]]] = {}
        for f in findings:
            self.findings[f.finding_id] = f
            old = self._made.get(f.finding_id)
            if old is not None and (old[0][0] is f or old[0][0] == f) and old[0][1] == cols:
                made[f.finding_id] = old
                rows.append((f.finding_id, old[1]))
                continue
            dim = "" if f.active else "dim"
            sev = fmt.severity_text(f.severity) if f.active else Text(f.severity.label, style="dim")
            state_text = Text("ongoing", style="bold") if f.active else Text("resolved", style="green")
            title = fmt.text(render.finding_title(f), "bold" if f.active else dim,
                             widths.get("what", 40))
            if two:
                sev.append("\n")
                sev.append_text(state_text)
                title.append("\n")
                title.append_text(_by_line(f, widths.get("what", 40)))
            cells = {
                "sev": sev, "st": state_text, "what": title,
                "who": who_text(f, widths.get("who", 22)),
                "pod": finding_pod_text(f, widths.get("pod", 20)),
                "where": Text(short_bdf(f.bdf) if two else (f.bdf or "-"), style=dim),
                "last": Text(fmt.clock(f.resolved_ns or f.last_ns), style="dim"),
            }
            row = tuple(cells[k] for k, _, _ in cols)
            made[f.finding_id] = ((f, cols), row)
            rows.append((f.finding_id, row))
        self._made = made
        self.set_rows(rows)
        if not self.findings:
            self.post_message(self.Highlighted(None))

    @property
    def current(self) -> ev.Finding | None:
        key = self.current_key
        return self.findings.get(key) if key else None

    def on_data_table_row_highlighted(self, message: DataTable.RowHighlighted) -> None:
        message.stop()
        self.post_message(self.Highlighted(message.row_key.value))

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        f = self.findings.get(message.row_key.value or "")
        if f is not None:
            self.post_message(OpenFinding(f))


def _by_line(f: ev.Finding, limit: int) -> Text:
    """`by containerd-shim[195] · default/sriov-pod`: the second line of a narrow finding row."""
    out = Text()
    if f.actor is not None:
        out.append("by ", style="dim")
        out.append_text(who_text(f, 24))
    pod = finding_pod_text(f, 28)
    if pod.plain != "-":
        out.append(" · " if out else "pod ", style="dim")
        out.append_text(pod)
    out.truncate(limit, overflow="ellipsis")
    return out


class StoryPane(Static):
    """The highlighted finding's story (what happened, who, which pod, what QEMU does, what to
    do), in the space the layout has; compact on small terminals."""

    DEFAULT_CSS = """
    StoryPane { padding: 0 1; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.finding: ev.Finding | None = None
        self.compact = False
        self._has_devices = False
        self._shown_once = False

    def update_from(self, finding: ev.Finding | None, has_devices: bool, compact: bool) -> None:
        # Most frames of a storm leave the story as it was: then it is neither rebuilt nor laid
        # out again (a layout of the screen is the dearest part of a frame).
        if (finding == self.finding and has_devices == self._has_devices
                and compact == self.compact and self._shown_once):
            return
        self._shown_once = True
        self.finding = finding
        self._has_devices = has_devices
        self.compact = compact
        self.refresh(layout=True)

    def render(self) -> RenderableType:
        # Built at paint time: how many evidence lines fit depends on the pane's final size.
        return self.renderable_for()

    def on_resize(self) -> None:
        self.refresh()

    def renderable_for(self) -> RenderableType:
        f = self.finding
        if f is None:
            return story.none_text(self._has_devices)
        if self.compact:
            return story.story(f, compact=True)
        width, height = self.content_size
        if width <= 0 or height <= 0:
            return story.story(f)
        # Measured, not estimated: the rows wrap, and evidence fills what they leave (newest
        # last), so the pane never cuts the newest lines off at its bottom.
        console = self.app.console
        used = len(console.render_lines(story.story(f), console.options.update_width(width),
                                        pad=False))
        room = height - used - 1  # the evidence heading
        return story.story(f, evidence=min(12, room)) if room > 0 else story.story(f)


_TS = attrgetter("ts_ns")


class EventLog(ScrollView, can_focus=True):
    """The live event stream in event time: bounded, filterable, synthetic and resync marked.

    A record that arrives after newer ones (eBPF's ring buffer is read after the uevent socket)
    is put at its own time, marked `late +N` with how far behind it came, so the stream reads
    as the story. Only the visible lines are formatted (line API), so 10,000 events/s cost the
    render only what fits on screen; the buffer keeps the newest `max_events`.
    """

    COMPONENT_CLASSES = {"eventlog--cursor"}
    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    EventLog > .eventlog--cursor { background: $accent 40%; }
    EventLog:focus > .eventlog--cursor { background: $accent; color: $text; }
    """
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor(-10)", "Page up", show=False),
        Binding("pagedown", "cursor(10)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last (follow)", show=False),
        Binding("enter", "select", "Detail", show=False),
    ]

    cursor: reactive[int] = reactive(-1, always_update=True)

    class Selected(Message):
        """The user chose an event (Enter or click on the current row)."""

        def __init__(self, event: ev.Event) -> None:
            super().__init__()
            self.event = event

    def __init__(self, max_events: int = 2000, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.max_events = max_events
        self.all: deque[ev.Event] = deque(maxlen=max_events)
        self.shown: deque[ev.Event] = deque(maxlen=max_events)
        self.filter = fmt.EventFilter()
        self.follow = True
        self._last: ev.Event | None = None
        self._ctx = fmt.FilterContext()
        self._cache: dict[tuple[int, int], tuple[ev.Event, Strip]] = {}
        self.late: dict[int, int] = {}
        """id(event) -> how far behind the newest record it arrived (ns), for those > 1 ms."""
        self._newest = 0

    # ---- data ---------------------------------------------------------------------------------

    def update_from(self, state: HostState) -> None:
        recent = state.recent
        start = 0
        if self._last is not None:
            for i in range(len(recent) - 1, -1, -1):
                if recent[i] is self._last:
                    start = i + 1
                    break
        new = recent[start:]
        if not new:
            return
        self._last = recent[-1]
        self._ctx = fmt.FilterContext.of(state)
        f = self.filter
        # One pass: mark the records that came late, and see whether the batch is in time
        # order after everything before it (the usual case: then it is appended, not sorted).
        newest, mark, in_order = self._newest, fmt.LATE_MARK_NS, True
        for e in new:
            ts = e.ts_ns
            if ts >= newest:
                newest = ts
            else:
                in_order = False
                if newest - ts >= mark:
                    self.late[id(e)] = newest - ts
        self._newest = newest
        self.all, evicted = self._merged(self.all, new, in_order)
        if self.late:
            for old in evicted:
                self.late.pop(id(old), None)
        kept = new if f.empty else [e for e in new if f.matches(e, self._ctx)]
        if not kept:
            return
        cur = None if self.follow else self.current
        before = self.cursor
        self.shown, _ = self._merged(self.shown, kept, in_order)
        # Keep the cursor on the record it was on (records were put before it, or fell out).
        after = 0
        if cur is not None:
            after = next((i for i in range(len(self.shown) - 1, -1, -1) if self.shown[i] is cur), 0)
        self._changed(before - after if cur is not None else 0)

    def _merged(self, buf: deque[ev.Event], batch: Sequence[ev.Event], in_order: bool = False
                ) -> tuple[deque[ev.Event], list[ev.Event]]:
        """`buf` with `batch` put at their times (after equal stamps: arrival order among ties),
        and the oldest records that no longer fit. A batch in time order after `buf` is
        appended in place; otherwise one stable sort of nearly sorted records (C speed) instead
        of an insertion per record: at 10,000 events/s a frame takes in 2,000."""
        if in_order:
            over = len(buf) + len(batch) - self.max_events
            evicted = list(itertools.islice(buf, 0, min(over, len(buf)))) if over > 0 and self.late else []
            buf.extend(batch)
            return buf, evicted
        items = list(buf)
        items.extend(batch)
        items.sort(key=_TS)  # stable: ties keep arrival order
        cut = max(0, len(items) - self.max_events)
        return deque(items[cut:], maxlen=self.max_events), items[:cut]

    def set_filter(self, f: fmt.EventFilter) -> None:
        self.filter = f
        self.shown = deque(
            (e for e in self.all if f.empty or f.matches(e, self._ctx)), maxlen=self.max_events
        )
        self.follow = True
        self._changed(0)

    def _follow_end(self) -> None:
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def _changed(self, dropped: int) -> None:
        self._cache.clear() if len(self._cache) > 4096 else None
        self.virtual_size = Size(self.size.width, len(self.shown))
        n = len(self.shown)
        if self.follow or self.cursor >= n:
            self.cursor = n - 1
            self.scroll_to(y=max(0, n - self.scrollable_content_region.height), animate=False, immediate=True)
            self.call_after_refresh(self._follow_end)
        else:
            self.cursor = max(0, self.cursor - dropped) if self.cursor >= 0 else self.cursor
            if dropped:
                self.scroll_to(y=max(0, self.scroll_offset.y - dropped), animate=False, immediate=True)
        self.refresh()

    @property
    def current(self) -> ev.Event | None:
        if 0 <= self.cursor < len(self.shown):
            return self.shown[self.cursor]
        return None

    # ---- rendering ----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        idx = self.scroll_offset.y + y
        width = self.scrollable_content_region.width or self.size.width
        if idx >= len(self.shown) or idx < 0:
            return Strip.blank(width, self.rich_style)
        e = self.shown[idx]
        is_cursor = idx == self.cursor and (self.has_focus or not self.follow)
        key = (id(e), width)
        # The record itself is kept beside its line: an id is reused once its record is gone.
        hit = None if is_cursor else self._cache.get(key)
        strip = hit[1] if hit is not None and hit[0] is e else None
        if strip is None:
            line = fmt.event_line(e, late_ns=self.late.get(id(e), 0))
            line.truncate(width, overflow="ellipsis", pad=True)
            segs = list(line.render(self.app.console, end=""))
            strip = Strip(segs, line.cell_len).simplify()
            if is_cursor:
                strip = strip.apply_style(self.get_component_rich_style("eventlog--cursor"))
            else:
                self._cache[key] = (e, strip)
        return strip.crop_extend(0, width, self.rich_style)

    def on_resize(self) -> None:
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(self.shown))
        self.call_after_refresh(self._follow_end)

    # ---- intents ------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        n = len(self.shown)
        if not n:
            return
        self.cursor = min(n - 1, max(0, (self.cursor if self.cursor >= 0 else n - 1) + delta))
        self.follow = self.cursor == n - 1
        self._scroll_to_cursor()

    def action_first(self) -> None:
        if self.shown:
            self.cursor = 0
            self.follow = False
            self._scroll_to_cursor()

    def action_last(self) -> None:
        self.follow = True
        self._changed(0)

    def _scroll_to_cursor(self) -> None:
        h = self.scrollable_content_region.height
        y = self.scroll_offset.y
        if self.cursor < y:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= y + h:
            self.scroll_to(y=self.cursor - h + 1, animate=False, immediate=True)

    def action_select(self) -> None:
        e = self.current
        if e is not None:
            self.post_message(self.Selected(e))

    def on_click(self, event: Click) -> None:
        idx = self.scroll_offset.y + event.y
        if 0 <= idx < len(self.shown):
            if idx == self.cursor and event.chain >= 2:
                self.action_select()
            self.cursor = idx
            self.follow = idx == len(self.shown) - 1
