"""Provides `python -m diag.tui.screenshots DIR`: regenerate the README's dashboard screenshots.

Replays the bundled demo journal (diag/data/demo.jsonl) through the real rules, drives the app
headless at fixed sizes (harlequin's scripts/export_screenshots.py) and writes SVGs, plus PNGs
when `rsvg-convert` (Debian: librsvg2-bin) is installed. Generated files, never hand-edited.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from textual.pilot import Pilot

from diag import codec
from diag import events as ev
from diag.core.correlator import Correlator
from diag.core.state import HostState, SnapshotListener
from diag.tui.app import VfioWatchApp
from diag.tui.widgets import DevicesTable, FindingsTable


class JournalSnapshot:
    """A SnapshotFeed that publishes one state: the journal's first `position` events applied.

    (The TUI may not import the runtime's ReplayFeed; the pure core is enough for a still.)
    """

    def __init__(self, events: list[ev.Event], position: int) -> None:
        core = Correlator()
        for e in events[:position]:
            core.feed(e)
        self.state = core.snapshot()
        self._listeners: list[SnapshotListener] = []

    def subscribe(self, listener: SnapshotListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        for listener in self._listeners:
            listener(self.state)

    def stop(self) -> None:
        pass


def demo_events() -> tuple[list[ev.Event], codec.Header | None]:
    path = Path(str(resources.files("diag") / "data" / "demo.jsonl"))
    with path.open("rb") as fh:
        records = list(codec.iter_records(fh))
    header = next((r for r in records if isinstance(r, codec.Header)), None)
    events = [r for r in records if isinstance(r, ev.Event) and not isinstance(r, ev.Finding)]
    return events, header


def incident_position(events: list[ev.Event]) -> int:
    """The incident at its height: just after QEMU's bus error (the VF on vfio-pci, its finding
    ongoing and confirmed) and what arrives with it; else just after the first bind to vfio-pci
    and the late records about it; else the whole journal."""
    for i, e in enumerate(events):
        if isinstance(e, ev.LogLineMatched) and e.signature == "qemu-bus-not-found":
            pos = i + 1
            while pos < len(events) and events[pos].ts_ns <= e.ts_ns + 100_000_000:
                pos += 1
            return pos
    for i, e in enumerate(events):
        if isinstance(e, ev.DeviceBound) and e.driver == "vfio-pci" and not e.synthetic:
            pos = i + 1
            for later in events[pos:]:
                if isinstance(later, ev.SysfsWriteObserved):
                    if later.ts_ns > e.ts_ns:
                        break  # the next action (a restore) begins
                elif getattr(later, "bdf", None) == e.bdf:
                    break
                pos += 1
            return pos
    return len(events)


async def _open_vfio_device(pilot: Pilot[None]) -> None:
    table = pilot.app.query_one(DevicesTable)
    state: HostState = pilot.app.state  # type: ignore[attr-defined]
    vfio = next((d.bdf for d in state.devices if d.driver == "vfio-pci"), None)
    if vfio is not None:
        table.move_cursor(row=table._order.index(vfio))
        await pilot.press("enter")


async def _open_first_finding(pilot: Pilot[None]) -> None:
    pilot.app.query_one(FindingsTable).focus()
    await pilot.press("enter")


Shot = tuple[str, tuple[int, int], Callable[[Pilot[None]], Awaitable[None]] | None, bool]
SHOTS: list[Shot] = [
    ("dashboard-80x24", (80, 24), None, False),
    ("dashboard-160x45", (160, 45), None, False),
    ("device-vfio", (110, 45), _open_vfio_device, False),
    ("finding", (110, 45), _open_first_finding, False),
    ("after-the-story-120x35", (120, 35), None, True),
]
"""(name, size, what to do before the shot, at the end of the journal instead of the incident)."""


async def _shoot(out: Path, name: str, size: tuple[int, int],
                 action: Callable[[Pilot[None]], Awaitable[None]] | None,
                 events: list[ev.Event], header: codec.Header | None, at_end: bool = False) -> Path:
    feed = JournalSnapshot(events, len(events) if at_end else incident_position(events))
    app = VfioWatchApp(feed, hostname=(header.hostname if header else "") or "?",
                       kernel=(header.kernel if header else "") or "?", mode="DEMO")
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        if action is not None:
            await action(pilot)
            await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        path = out / f"{name}.svg"
        path.write_text(app.export_screenshot(title=f"vfiowatch demo ({size[0]}x{size[1]})"))
    return path


def to_png(svg: Path) -> Path | None:
    """Render an SVG to PNG with rsvg-convert; None when it is not installed."""
    exe = shutil.which("rsvg-convert")
    if exe is None:
        return None
    # Rich's SVG puts each styled span in its own <text> with &#160; for spaces; librsvg drops
    # leading non-breaking spaces, so the PNG gets plain spaces kept by xml:space="preserve".
    text = svg.read_text()
    text = text.replace('<svg class="rich-terminal"', '<svg xml:space="preserve" class="rich-terminal"', 1)
    text = re.sub("&#160;", " ", text)
    png = svg.with_suffix(".png")
    subprocess.run([exe, "--zoom", "1", "-o", str(png)], input=text.encode(), check=True)
    return png


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    events, header = demo_events()
    pngs = 0
    for name, size, action, at_end in SHOTS:
        svg = asyncio.run(_shoot(out, name, size, action, events, header, at_end))
        png = to_png(svg)
        pngs += png is not None
        print(f"wrote {svg}" + (f" and {png.name}" if png else ""))
    if not pngs:
        print("rsvg-convert not found: SVGs only (apt-get install librsvg2-bin for PNGs)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
