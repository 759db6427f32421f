"""Provides the detail screens: a device's story, a finding's evidence, and the key help."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from diag import events as ev
from diag.core.state import DeviceView, HostState
from diag.tui import format as fmt
from diag.tui import story


def _section(title: str) -> Text:
    return Text("\n" + title, style="bold underline")


def _kv(rows: list[tuple[str, Text | str]]) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="dim", no_wrap=True)
    t.add_column()
    for k, v in rows:
        t.add_row(k, v if isinstance(v, Text) else Text(v))
    return t


def device_story(view: DeviceView | None, bdf: str, state: HostState) -> RenderableType:
    """Everything about one device: identity, driver timeline, link history, sandbox, findings."""
    if view is None:
        return Text(f"{bdf}: not present in the current snapshot (removed?)", style="bold red")
    return Group(*_identity(view, state), *_driver_timeline(view), *_link_history(view),
                 *_sandbox(view, state), *_findings(view, state), *_recent(view, state))


def device_story_basis(bdf: str, state: HostState) -> tuple[object, ...]:
    """Everything `device_story` reads from `state` for `bdf`: the story is the same while this
    is (a storm of other devices' events changes none of it)."""
    view = state.device(bdf)
    if view is None:
        return (bdf, None)
    sb = next((s for s in state.sandboxes if s.sandbox_id == view.sandbox_id), None) if view.sandbox_id else None
    return (bdf, view, fmt.since(view, state.ts_ns), sb, _mine(view, state), _recent_of(bdf, state))


def _identity(view: DeviceView, state: HostState) -> list[RenderableType]:
    d = view.device
    title = Text(d.bdf, style="bold")
    title.append("  " + fmt.device_name(view, 60))
    if d.role != "none":
        title.append("  " + fmt.role_tag(view) + (f" of {d.pf}" if d.pf else ""), style="cyan")
    ident = [
        ("driver", fmt.driver_text(view.driver)),
        ("since", Text(f"{fmt.clock(view.since_ns)} ({fmt.since(view, state.ts_ns)} ago)" if view.since_ns else "agent start")),
        ("driver at start", fmt.driver_text(view.driver_at_start)),
        ("driver_override", fmt.text(view.driver_override or "-")),
        ("id", Text(f"{d.vendor}:{d.device} class {d.class_code}")),
        ("IOMMU group", Text("-" if d.iommu_group is None else str(d.iommu_group))),
        ("vfio node", fmt.text(d.vfio_group_path or "-")),
        ("netdev", fmt.netdev_text(view, 40)),
        ("sandbox", fmt.sandbox_text(view, 64)),
        ("moved last by", fmt.actor_text(view.actor, 40) if view.actor else Text("-", style="dim")),
    ]
    if d.vfs:
        ident.append(("VFs", Text(", ".join(d.vfs))))
    return [title, _kv(ident)]


def _driver_timeline(view: DeviceView) -> list[RenderableType]:
    parts: list[RenderableType] = [_section(f"Driver timeline ({len(view.moves)})")]
    story = last_move(view)
    if story is not None:
        parts.append(story)
    if not view.moves:
        parts.append(Text("no driver change seen since the agent started", style="dim"))
        return parts
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    t.add_column("When (UTC)", no_wrap=True)
    t.add_column("From → to", no_wrap=True)
    t.add_column("Who")
    t.add_column("")
    for m in view.moves:
        arrow = fmt.driver_text(m.from_driver)
        arrow.append(" → ")
        arrow.append_text(fmt.driver_text(m.to_driver))
        marks = Text()
        if m.synthetic:
            marks.append("SYNTH ", style="bold magenta")
        if m.resync:
            marks.append("RESYNC", style="bold cyan")
        t.add_row(fmt.clock(m.ts_ns), arrow, fmt.actor_text(m.actor), marks)
    parts.append(t)
    return parts


def _link_history(view: DeviceView) -> list[RenderableType]:
    parts: list[RenderableType] = [_section(f"Link history ({len(view.links)})")]
    if not view.links:
        parts.append(Text("no link change seen", style="dim"))
        return parts
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    t.add_column("When (UTC)", no_wrap=True)
    t.add_column("Netdev")
    t.add_column("Namespace")
    t.add_column("What")
    for n in view.links:
        t.add_row(fmt.clock(n.ts_ns), fmt.text(n.ifname, limit=24), fmt.text(n.netns, limit=32), fmt.text(n.what))
    parts.append(t)
    return parts


def _sandbox(view: DeviceView, state: HostState) -> list[RenderableType]:
    sb = next((s for s in state.sandboxes if s.sandbox_id == view.sandbox_id), None) if view.sandbox_id else None
    if sb is None and view.sandbox_id:
        # Known from the evidence (its shim moved the VF) but not running now.
        return [_section("Sandbox"), _kv([
            ("sandbox", fmt.text(view.sandbox_id)),
            ("pod", fmt.text(fmt.pod_label(view.pod, view.pod_namespace) or "-")),
            ("state", Text("gone (no longer running)", style="dim")),
        ])]
    if sb is None:
        return [_section("Sandbox"), Text("not used by any known sandbox", style="dim")]
    return [_section("Sandbox"), _kv([
        ("sandbox", fmt.text(sb.sandbox_id)),
        ("pod", fmt.text(f"{sb.pod_namespace or ''}/{sb.pod or ''}" if sb.pod else "-")),
        ("runtime", fmt.text(f"{sb.runtime} handler {sb.handler or '?'}")),
        ("cold_plug_vfio", fmt.text(f"{sb.cold_plug_vfio} ({sb.cold_plug_origin})", "bold yellow" if sb.cold_plug_vfio == "no-port" else "")),
        ("shim / VMM pid", Text(f"{sb.shim_pid or '-'} / {sb.vmm_pid or '-'}")),
    ])]


def _mine(view: DeviceView, state: HostState) -> tuple[ev.Finding, ...]:
    bdf = view.device.bdf
    return tuple(f for f in state.findings if f.bdf == bdf or (f.pf == bdf))


def _findings(view: DeviceView, state: HostState) -> list[RenderableType]:
    mine = _mine(view, state)
    parts: list[RenderableType] = [_section(f"Findings ({len(mine)})")]
    for f in mine:
        line = fmt.severity_text(f.severity) if f.active else Text("resolved", style="dim")
        line.append(" ")
        line.append_text(fmt.text(f.rule, "bold"))
        line.append(": ")
        line.append_text(fmt.text(f.summary))
        parts.append(line)
    if not mine:
        parts.append(Text("none", style="dim"))
    return parts


RECENT_LINES = 15


def _recent_of(bdf: str, state: HostState) -> tuple[ev.Event, ...]:
    """The device's newest events in the snapshot's ring, oldest first: found from the newest
    back, so a device with events of its own is found without reading the whole ring."""
    out: list[ev.Event] = []
    for e in reversed(state.recent):
        if fmt.event_bdf(e) == bdf:
            out.append(e)
            if len(out) == RECENT_LINES:
                break
    return tuple(reversed(out))


def _recent(view: DeviceView, state: HostState) -> list[RenderableType]:
    recent = _recent_of(view.device.bdf, state)
    return [_section(f"Recent events ({len(recent)})"), *(fmt.event_line(e) for e in recent)]


def last_move(view: DeviceView) -> Text | None:
    """`igbvf → vfio-pci at T by X`: the last real move, an unbind and the bind after it joined."""
    moves = [m for m in view.moves if not m.synthetic]
    if not moves:
        return None
    last = moves[-1]
    frm = last.from_driver
    if frm is None and len(moves) >= 2 and moves[-2].to_driver is None:
        frm = moves[-2].from_driver
    out = Text("last move: ", style="bold")
    out.append_text(fmt.driver_text(frm))
    out.append(" → ")
    out.append_text(fmt.driver_text(last.to_driver))
    out.append(f" at {fmt.clock(last.ts_ns)} by ")
    out.append_text(fmt.actor_text(last.actor))
    return out


def finding_story(f: ev.Finding) -> RenderableType:
    """A finding's story, then its evidence, explanation and remedy. A resolved finding is told
    in the past tense, with how it ended and no remedy (there is nothing left to do)."""
    parts: list[RenderableType] = [story.story(f)]
    rows: list[tuple[str, Text | str]] = [
        ("first / last", Text(f"{fmt.clock(f.first_ns)} / {fmt.clock(f.last_ns)} UTC")),
        ("rule", fmt.text(f.rule)),
    ]
    if f.netns:
        rows.append(("netns", fmt.text(f.netns)))
    shown = {"from_driver", "cold_plug_vfio", "cold_plug_origin", "predicted_error", "method"}
    for k, v in f.labels:
        if k not in shown:
            rows.append((fmt.safe(k, 20), fmt.text(v, limit=120)))
    rows.append(("id", fmt.text(f.finding_id, "dim")))
    parts.append(_kv(rows))
    parts.append(_section(f"Evidence ({len(f.evidence)}, in time order)"))
    if f.evidence:
        t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        t.add_column("When (UTC)", no_wrap=True)
        t.add_column("Source", no_wrap=True)
        t.add_column("What")
        for e in f.evidence:
            t.add_row(fmt.clock(e.ts_ns), fmt.text(e.source, limit=10), fmt.text(e.text, limit=300))
        parts.append(t)
    else:
        parts.append(Text("none recorded", style="dim"))
    if f.active:
        parts.append(_section("Explanation"))
        parts.append(fmt.text(f.explanation or "-", limit=4000))
        parts.append(_section("Remedy"))
        parts.append(fmt.text(f.remedy or "-", "green", limit=4000))
    else:
        parts.append(_section("Resolved"))
        parts.append(fmt.text(f"at {fmt.clock(f.resolved_ns)}: {f.resolved_reason or 'the condition ended'}",
                              "green", limit=1000))
    return Group(*parts)


class DetailScreen(Screen[None]):
    """Base of the detail screens: a scrollable story that follows new snapshots."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.quit", "Quit"),
        Binding("question_mark", "app.help", "Help"),
        Binding("p", "app.toggle_pause", "Pause"),
    ]
    DEFAULT_CSS = """
    DetailScreen VerticalScroll { padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        from diag.tui.widgets import HostHeader, KeyBar

        app = self.app
        yield HostHeader(getattr(app, "hostname", ""), getattr(app, "kernel", ""), getattr(app, "mode", ""),
                         min_interval_s=getattr(app, "header_interval_s", 0.0), id="detail-header")
        with VerticalScroll():
            yield Static(id="detail-story")
        yield KeyBar([("esc", "Back", "app.pop_screen"), ("/", "Filter", "app.filter"),
                      ("f", "Findings", "app.findings_only"), ("p", "Pause", "app.toggle_pause"),
                      ("?", "Help", "app.help"), ("q", "Quit", "app.quit")])

    _basis: object = None
    """What the story shown was told from (`story_basis`); None: tell it again."""

    def on_mount(self) -> None:
        self.update_from(getattr(self.app, "state", HostState()))

    def on_screen_resume(self) -> None:
        self.update_from(getattr(self.app, "state", HostState()))
        self.query_one(VerticalScroll).scroll_home(animate=False)

    def update_from(self, state: HostState) -> None:
        from diag.tui.widgets import HostHeader

        headers = self.query(HostHeader)
        if not headers:  # pushed but not composed yet: on_mount renders it
            return
        headers.first().update_from(state, getattr(self.app, "status_note", None))
        # The story is told again (and laid out: its height changes the scroll) only when what
        # it says changed, not on every snapshot of a storm.
        basis = self.story_basis(state)
        if basis is not None and basis == self._basis:
            return
        self._basis = basis
        self.query_one("#detail-story", Static).update(self.story(state))

    def story_basis(self, state: HostState) -> object:
        """Everything the story reads from `state` (None: unknown, tell it every time)."""
        return None

    def story(self, state: HostState) -> RenderableType:
        raise NotImplementedError


class DeviceScreen(DetailScreen):
    """One device's story, live."""

    def __init__(self, bdf: str = "") -> None:
        super().__init__()
        self.bdf = bdf

    def story_basis(self, state: HostState) -> object:
        return device_story_basis(self.bdf, state)

    def story(self, state: HostState) -> RenderableType:
        return device_story(state.device(self.bdf), self.bdf, state)


class FindingScreen(DetailScreen):
    """One finding's evidence, explanation and remedy (newest version of it)."""

    def __init__(self, finding: ev.Finding | None = None) -> None:
        super().__init__()
        self.finding = finding

    def story_basis(self, state: HostState) -> object:
        if self.finding is not None:
            newer = next((f for f in state.findings if f.finding_id == self.finding.finding_id), None)
            if newer is not None:
                self.finding = newer
        return ("finding", self.finding)

    def story(self, state: HostState) -> RenderableType:
        if self.finding is None:
            return Text("no finding selected", style="dim")
        newer = next((f for f in state.findings if f.finding_id == self.finding.finding_id), None)
        if newer is not None:
            self.finding = newer
        return finding_story(self.finding)


HELP = [
    ("Tab / Shift+Tab", "move between devices, findings and events"),
    ("↑ ↓ PgUp PgDn", "move in a list (mouse and wheel work too)"),
    ("Enter", "detail: device story, finding evidence, event's device"),
    ("Esc", "back (or clear the filter)"),
    ("/", "filter the event stream: dev:BDF kind:KIND sandbox:ID source:NAME synthetic words"),
    ("f", "findings only (again: everything)"),
    ("p", "pause the view (live) or playback (replay)"),
    ("space . , [ ] < > + -", "replay: play/pause, step, step back, seek ∓10%, start, end, speed ×2 ÷2"),
    ("n N g", "replay: next / previous finding, go to a recorded time (10:41:07, ISO, +90)"),
    ("Ctrl+P", "command palette: open a device, filter, pause, ..."),
    ("?", "this help"),
    ("q", "quit"),
]


class HelpScreen(ModalScreen[None]):
    """The keys, as a modal."""

    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: auto; max-width: 100; height: auto; border: round $accent; padding: 0 1; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold cyan", no_wrap=True)
        t.add_column()
        for k, v in HELP:
            t.add_row(k, v)
        yield Static(Group(Text("vfiowatch keys", style="bold"), t, Text("Esc closes", style="dim")))
