"""Provides the dashboard's widgets; each takes data down through `update_from(state)`.

Widgets hold no references to sources, sinks or the correlator, do no I/O while rendering and
post intents (OpenDevice, OpenFinding) for the screen or app to act on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import DataTable, Static

from diag import events as ev
from diag.core.state import HostState
from diag.events import replace
from diag.tui import format as fmt
from diag.tui.messages import OpenDevice, OpenFinding


class HostHeader(Static):
    """Host, kernel, Kata handlers, each source's health, events/s, losses and play state."""

    DEFAULT_CSS = """
    HostHeader { height: auto; background: $panel; padding: 0 1; }
    """

    def __init__(self, hostname: str, kernel: str, mode: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.hostname = hostname
        self.kernel = kernel
        self.mode = mode
        self.state = HostState()
        self.status_note = Text()

    def update_from(self, state: HostState, status_note: Text | None = None) -> None:
        self.state = state
        if status_note is not None:
            self.status_note = status_note
        self.update(self.compose_text())

    def compose_text(self) -> Text:
        st = self.state
        width = max(40, (self.size.width or 80) - 2)
        one = Text()
        one.append("vfiowatch ", style="bold")
        one.append(" " + fmt.safe(self.mode, 12) + " ", style="bold reverse")
        one.append(" ")
        one.append(fmt.safe(self.hostname or "?", 32), style="bold")
        one.append(" " + fmt.safe(self.kernel or "?", 32), style="dim")
        one.append("  " + fmt.clock(st.ts_ns) + " UTC")
        if self.status_note:
            one.append("  ")
            one.append(self.status_note)
        two = fmt.kata_text(st.kata_configs, path_limit=max(12, width - 50), exposure=st.kata_exposure)
        items: list[Text] = []
        for src in fmt.sources_for_header(st):
            # Narrow terminals keep only eBPF's mode (it says how writes are attributed).
            show_mode = width >= 110 or src.name == "ebpf"
            items.append(fmt.source_text(src if show_mode else replace(src, mode=""),
                                         reason_limit=28 if width < 100 else 60))
        rate = Text("│ ", style="dim")
        rate.append(fmt.rate_text(fmt.events_per_second(st)))
        rate.append(f" · {st.events_total} ev · lost ")
        rate.append(str(st.lost_total), style="bold red" if st.lost_total else "green")
        items.append(rate)
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
        return Text("\n").join(lines)

    def on_resize(self) -> None:
        self.update(self.compose_text())


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


class _Table(DataTable[Text]):
    """A DataTable whose rows are keyed and updated in place, keeping the cursor on its key."""

    def __init__(self, **kw: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kw)  # type: ignore[arg-type]
        self._rows: dict[str, tuple[Text, ...]] = {}
        self._order: list[str] = []
        self._columns_for: str = ""
        self._state: HostState | None = None

    def update_from(self, state: HostState) -> None:
        raise NotImplementedError

    def on_resize(self) -> None:
        # Column sets and truncation depend on the width: redo them from the last snapshot.
        if self._state is not None:
            self.update_from(self._state)

    def set_columns(self, layout: str, columns: Sequence[tuple[str, str, int | None]]) -> bool:
        if layout == self._columns_for:
            return False
        self._columns_for = layout
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
        current = self._current_key()
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
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


class DevicesTable(_Table):
    """PFs with their VFs nested: BDF, name, driver (vfio-pci stands out), override, netdev, ..."""

    DEFAULT_CSS = """
    DevicesTable { overflow-x: hidden; }
    """

    def update_from(self, state: HostState) -> None:
        self._state = state
        wide = self.size.width >= 130
        name_w = max(8, self.size.width - (104 if wide else 74))
        if wide:
            cols = [("bdf", "BDF", None), ("role", "SR-IOV", None), ("name", "Device", None),
                    ("driver", "Driver", None), ("ovr", "Override", None),
                    ("netdev", "Netdev @ netns", None), ("grp", "IOMMU", None),
                    ("sandbox", "Sandbox / pod", None), ("since", "Since", None)]
        else:
            cols = [("bdf", "BDF", None), ("driver", "Driver", None), ("ovr", "Override", None),
                    ("netdev", "Netdev", None), ("grp", "Grp", None), ("sandbox", "Sandbox", None),
                    ("since", "Since", None), ("name", "Device", None)]
        self.set_columns("wide" if wide else "narrow", cols)
        rows = []
        for view, depth in fmt.device_order(state.devices):
            d = view.device
            bdf = Text(("└ " if depth else "") + d.bdf, style="" if depth else "bold")
            cells = {
                "bdf": bdf,
                "role": Text(fmt.role_tag(view), style="dim"),
                "name": Text(fmt.device_name(view, name_w)),
                "driver": fmt.driver_text(view.driver),
                "ovr": fmt.text(view.driver_override or "-", fmt.VFIO_STYLE if view.driver_override == "vfio-pci" else "dim", 12),
                "netdev": fmt.netdev_text(view, 20),
                "grp": Text("-" if d.iommu_group is None else str(d.iommu_group)),
                "sandbox": fmt.sandbox_text(view, 16) if wide else fmt.text(view.pod or view.sandbox_id or "-", "magenta" if view.pod or view.sandbox_id else "dim", 10),
                "since": Text(fmt.since(view, state.ts_ns), style="dim"),
            }
            rows.append((d.bdf, tuple(cells[k] for k, _, _ in cols)))
        self.set_rows(rows)

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        if message.row_key.value:
            self.post_message(OpenDevice(message.row_key.value))


class FindingsTable(_Table):
    """Findings, severity-coloured, ongoing first then resolved; Enter shows the detail."""

    DEFAULT_CSS = """
    FindingsTable { overflow-x: hidden; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)
        self.findings: dict[str, ev.Finding] = {}

    def update_from(self, state: HostState) -> None:
        self._state = state
        wide = self.size.width >= 110
        summary_w = max(16, self.size.width - (100 if wide else 40))
        if wide:
            cols = [("sev", "Severity", None), ("st", "State", None), ("rule", "Rule", None),
                    ("where", "Device", None), ("summary", "Summary", None), ("last", "Last seen", None)]
        else:
            cols = [("sev", "Sev", None), ("st", "State", None), ("where", "Device", None),
                    ("summary", "Summary", None)]
        self.set_columns("wide" if wide else "narrow", cols)
        rows = []
        self.findings = {}
        for f in state.findings:
            self.findings[f.finding_id] = f
            style = fmt.SEVERITY_STYLE.get(f.severity, "") if f.active else "dim"
            cells = {
                "sev": fmt.severity_text(f.severity) if f.active else Text(f.severity.label, style="dim"),
                "st": Text("ongoing", style="bold") if f.active else Text("resolved", style="dim"),
                "rule": fmt.text(f.rule, "" if f.active else "dim", 32),
                "where": fmt.finding_where(f, 24) if wide else Text(f.bdf or "-"),
                "summary": fmt.text(fmt.summary_without_device(f), "" if f.active else "dim", summary_w),
                "last": Text(fmt.clock(f.resolved_ns or f.last_ns), style="dim"),
            }
            del style
            rows.append((f.finding_id, tuple(cells[k] for k, _, _ in cols)))
        self.set_rows(rows)

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        f = self.findings.get(message.row_key.value or "")
        if f is not None:
            self.post_message(OpenFinding(f))


class EventLog(ScrollView, can_focus=True):
    """The live event stream: bounded, filterable, synthetic and resync events marked.

    Only the visible lines are formatted (line API), so 10,000 events/s cost the render only
    what fits on screen; the buffer keeps the newest `max_events`.
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
        self._sandbox_of: Mapping[str, str] = {}
        self._cache: dict[tuple[int, int], Strip] = {}

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
        self._sandbox_of = {d.bdf: d.sandbox_id for d in state.devices if d.sandbox_id}
        self.all.extend(new)
        f = self.filter
        before = len(self.shown)
        dropped = 0
        for e in new:
            if f.empty or f.matches(e, self._sandbox_of):
                if len(self.shown) == self.max_events:
                    dropped += 1
                self.shown.append(e)
        if len(self.shown) != before or dropped:
            self._changed(dropped)

    def set_filter(self, f: fmt.EventFilter) -> None:
        self.filter = f
        self.shown = deque(
            (e for e in self.all if f.empty or f.matches(e, self._sandbox_of)), maxlen=self.max_events
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
        strip = None if is_cursor else self._cache.get(key)
        if strip is None:
            line = fmt.event_line(e)
            line.truncate(width, overflow="ellipsis", pad=True)
            segs = list(line.render(self.app.console, end=""))
            strip = Strip(segs, line.cell_len).simplify()
            if is_cursor:
                strip = strip.apply_style(self.get_component_rich_style("eventlog--cursor"))
            else:
                self._cache[key] = strip
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
