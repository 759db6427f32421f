"""Provides a finding's story as Rich renderables: the dashboard's story pane and detail screen.

The words come from `diag.render` (the rule's title, `finding_story`'s rows), so the dashboard
says what logs and postmortem say; here they are only laid out: a headline (severity, title,
state), then one row per fact (what happened, who, pod, network, cold plug, QEMU, what to do
or how it ended). `compact` keeps each row to one line for small terminals.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from diag import events as ev
from diag import render
from diag.tui import format as fmt

HEADING_STYLE = {
    "what happened": "bold",
    "who": "bold",
    "pod": "bold magenta",
    "QEMU": "bold red",
    "what to do": "bold green",
    "ended": "bold green",
}
VALUE_STYLE = {
    "pod": "magenta",
    "QEMU": "red",
    "what to do": "green",
}
COMPACT_ROWS = ("who", "pod", "QEMU", "what to do", "ended")
"""The rows a small terminal keeps, in this order (the headline says what happened)."""


def headline(f: ev.Finding) -> Text:
    """`CRITICAL moved to vfio-pci while cold plug is disabled · ongoing since 16:07:58.841`."""
    out = fmt.severity_text(f.severity) if f.active else Text("resolved", style="bold green")
    out.append(" ")
    out.append(fmt.safe(render.finding_title(f), 80), style="bold" if f.active else "")
    if f.bdf:
        out.append(f"  {f.bdf}", style="cyan")
    if f.active:
        out.append(f"  ongoing since {fmt.clock(f.first_ns)}", style="dim")
    else:
        out.append(f"  {fmt.clock(f.first_ns)} → {fmt.clock(f.resolved_ns)}", style="dim")
    return out


def rows(f: ev.Finding, *, compact: bool = False) -> list[tuple[str, str]]:
    """The story's (heading, text) rows; a small terminal keeps the COMPACT_ROWS."""
    story = render.finding_story(f)
    if not compact:
        return story
    have = dict(story)
    return [(k, have[k]) for k in COMPACT_ROWS if k in have]


def story(f: ev.Finding, *, compact: bool = False, evidence: int = 0) -> RenderableType:
    """The finding's story: headline, rows, then up to `evidence` evidence lines (newest)."""
    t = Table.grid(padding=(0, 1))
    t.add_column(no_wrap=True, min_width=13)
    # The column stays wrappable so the grid narrows it to the pane; compact values then end
    # in an ellipsis on their one line instead of being cut mid-word at the pane's edge.
    t.add_column(overflow="fold")
    for key, value in rows(f, compact=compact):
        cell = fmt.text(value, VALUE_STYLE.get(key, ""), 1200)
        if compact:
            cell.no_wrap, cell.overflow = True, "ellipsis"
        t.add_row(Text(key, style=HEADING_STYLE.get(key, "dim")), cell)
    # Compact: the finding row above and the pane's title already say what happened.
    parts: list[RenderableType] = [t] if compact else [headline(f), t]
    if evidence and f.evidence:
        parts.append(Text(f"evidence ({len(f.evidence)}, time order)", style="bold underline"))
        for e in f.evidence[-evidence:]:
            line = Text(fmt.clock(e.ts_ns), style="dim", no_wrap=True, overflow="ellipsis")
            line.append(" " + fmt.safe(e.source, 7).ljust(7), style="blue")
            line.append(" " + fmt.safe(e.text, 300))
            parts.append(line)
    return Group(*parts)


def none_text(state_has_devices: bool) -> Text:
    """What the story pane says when there is no finding."""
    if not state_has_devices:
        return Text("waiting for the first snapshot…", style="dim")
    return Text("No finding: every VF is where its configuration says it should be.",
                style="green")
