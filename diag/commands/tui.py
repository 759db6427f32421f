"""Provides `vfiowatch tui`: wire a feed to the dashboard, live or replaying a journal.

This is composition code (it may import the runtime; the TUI itself may not): live mode builds
the runtime's Pipeline and hands its LiveFeed to the app; `--replay` hands it a ReplayFeed over
a journal (`replay()` and `add_replay_arguments()` serve `vfiowatch demo` too).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from diag.commands import Command, register
from diag.common.errors import DiagError
from diag.common.paths import HostPaths
from diag.core.state import HostState, SnapshotFeed
from diag.events import Event

if TYPE_CHECKING:
    from diag.commands.demo import Chapter
    from diag.runtime import Pipeline
    from diag.sources import SourceContext


def _speed(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v <= 10_000:
        raise argparse.ArgumentTypeError("speed must be > 0 and <= 10000")
    return v


def add_replay_arguments(p: argparse.ArgumentParser, default_speed: float) -> None:
    """The options of a journal replay (`tui --replay`, `demo`)."""
    p.add_argument("--speed", type=_speed, default=default_speed, metavar="N",
                   help=f"play N times faster than recorded (default {default_speed:g})")
    p.add_argument("--paused", action="store_true",
                   help="open paused at the first record (space plays, . steps)")
    p.add_argument("--at-end", action="store_true",
                   help="open at the end of the journal, every record applied")
    p.add_argument("--at", metavar="TIME",
                   help="open paused at this recorded time: HH:MM[:SS[.fff]] (UTC, the "
                        "journal's day), 2026-11-27T10:41:07Z, or +SECONDS from its start "
                        "(+1m30s); in the dashboard, g goes to a time, n / N to the next / "
                        "previous finding")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replay", type=Path, metavar="JOURNAL",
                   help="play a recorded journal (plain or .gz) instead of watching this host")
    add_replay_arguments(p, 1.0)


def _run(args: argparse.Namespace) -> int:
    if args.replay is not None:
        return replay(args.replay, args)
    return _live(args)


def require_terminal() -> None:
    """Refuse to start the dashboard without a terminal: with stdin or stdout not a tty
    (`make run </dev/null`, a pipe, a service) Textual would spin on a dead input for ever."""
    for name, stream in (("standard input", sys.stdin), ("standard output", sys.stdout)):
        try:
            tty = stream is not None and stream.isatty()
        except (ValueError, OSError):  # closed
            tty = False
        if not tty:
            raise DiagError(
                f"the dashboard needs a terminal, and {name} is not one",
                hint="run it in a terminal (ssh -t gives one); without a terminal use "
                     "`vfiowatch run` (the agent), `vfiowatch snapshot` or `vfiowatch postmortem`")


def replay(path: Path, args: argparse.Namespace, mode: str = "REPLAY", max_gap_s: float = 2.0,
           guide: Callable[[Sequence[Event]], Sequence[Chapter]] | None = None,
           hold_s: float = 0.0) -> int:
    """Play the journal at `path` in the dashboard with the replay options in `args`; with a
    `guide`, hold `hold_s` seconds at each chapter it finds in the journal, its caption shown."""
    from diag.runtime.playback import ReplayFeed, load_journal
    from diag.tui.app import VfioWatchApp

    require_terminal()
    at = getattr(args, "at", None)
    events, header, stats = load_journal(path)
    story = list(guide(events)) if guide is not None else []
    feed = ReplayFeed(
        events, header=header, stats=stats, speed=args.speed,
        autoplay=not (args.paused or args.at_end or at),
        start_at=(1 << 62) if args.at_end else 0, max_gap_s=max_gap_s,
        stops={c.position for c in story} if hold_s > 0 else (),
    )
    if at:
        from diag.common.when import parse_when
        try:
            when = parse_when(at, feed.events[0].ts_ns)
        except ValueError as exc:
            raise DiagError(f"--at: {exc}", hint="e.g. --at 10:41:07 or --at +90") from None
        feed.start_at = feed.position_at(when)
    h = feed.header
    app = VfioWatchApp(
        feed, hostname=(h.hostname if h else "") or "?", kernel=(h.kernel if h else "") or "?",
        mode=mode, guide=[(c.position, c.caption) for c in story], hold_s=hold_s, own_gc=True,
    )
    app.run()
    return 0


FIRST_FRAME_SOURCE = ("diag.sources.uevent.source", "uevent")
"""The source the first frame waits for (module, name): the devices and their drivers."""
REST_AFTER_S = 2.0
"""The other sources start this long after the first one at the latest, when the dashboard has
not painted a frame with devices by then (a --root without any PCI device)."""


class _BackgroundLiveFeed:
    """The runtime's LiveFeed, built on a thread once the dashboard is up, in two steps.

    The first frame waits only for the uevent source (the device list): it is imported, probed
    and started alone. The other sources (the Kata source's modules, bcc's import and compile
    for the eBPF source) cost more CPU than the dashboard's own start-up and, holding the GIL,
    delayed the first frame as much: they are imported, probed and started, in the registry's
    order (eBPF last), once the dashboard says it painted devices (`first_frame_shown`). The
    header shows each source as "not reported" until it is.
    """

    def __init__(self, paths: HostPaths, rest_after_s: float = REST_AFTER_S) -> None:
        self.paths = paths
        self.rest_after_s = rest_after_s
        self._listeners: list[Callable[[HostState], None]] = []
        self._feed: SnapshotFeed | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._shown = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def subscribe(self, listener: Callable[[HostState], None]) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._build, name="vfiowatch-start", daemon=True)
        self._thread.start()

    def first_frame_shown(self) -> None:
        """The dashboard painted its first frame with devices: start the other sources."""
        self._shown.set()

    def _build(self) -> None:
        import importlib

        from diag.runtime import Pipeline, build_sources
        from diag.sources import SourceContext

        ctx = SourceContext(paths=self.paths)
        module, name = FIRST_FRAME_SOURCE
        try:
            importlib.import_module(module)
            first = [name]
        except Exception:  # reported with the others' modules (`unloadable_sources`)
            first = []
        try:
            sources, unavailable = build_sources(ctx, first)
            pipe = Pipeline(sources, unavailable=unavailable)
            feed = pipe.live_feed()
        except Exception as exc:  # shown by the CLI after the app exits
            self.error = exc
            return
        for listener in self._listeners:
            feed.subscribe(listener)
        with self._lock:
            if self._stopped:
                return
            self._feed = feed
            feed.start()
        self._shown.wait(self.rest_after_s)
        try:
            self._start_rest(pipe, ctx, set(first))
        except Exception as exc:
            self.error = exc

    def _start_rest(self, pipe: Pipeline, ctx: SourceContext, started: set[str]) -> None:
        """Import, probe and start every other source, one at a time in the registry's order
        (each starts before the next one's probe: bcc's import is the eBPF source's probe)."""
        from diag.runtime import build_sources, unloadable_sources
        from diag.sources import SOURCES

        SOURCES.load()
        pipe.add_sources([], unloadable_sources())
        for other in SOURCES:
            if other in started:
                continue
            if self._stopped:
                return
            sources, unavailable = build_sources(ctx, [other])
            pipe.add_sources(sources, unavailable)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            feed = self._feed
        self._shown.set()
        if feed is not None:
            feed.stop()


def _live(args: argparse.Namespace) -> int:
    from diag.tui.app import VfioWatchApp

    paths = HostPaths.at(args.root)
    paths.require_sysfs()  # before the dashboard opens: an empty one marked LIVE would mislead
    require_terminal()  # after the root: a wrong --root is said first, wherever it runs
    feed = _BackgroundLiveFeed(paths)
    uname = os.uname()
    app = VfioWatchApp(feed, hostname=_read(paths, "etc/hostname") or uname.nodename,
                       kernel=_read(paths, "proc/sys/kernel/osrelease") or uname.release, mode="LIVE",
                       clock=time.time_ns, own_gc=True)
    app.run()
    if feed.error is not None:
        raise DiagError(f"the live sources could not start: {feed.error}",
                        hint="run `vfiowatch check` to see what this host lacks")
    return 0


def _read(paths: HostPaths, rel: str) -> str:
    try:
        return paths.read_text("/" + rel, 4096, regular=True).strip()
    except OSError:
        return ""


register(Command(
    name="tui",
    help="open the live dashboard (or replay a journal in it)",
    description=(
        "The dashboard: host, kernel, Kata handlers and their effective cold_plug_vfio, "
        "each source's health, PFs with their VFs and drivers (vfio-pci stands out), "
        "findings with evidence and remedy, and the live event stream. Keys: / filter, "
        "f findings only, p pause, Enter detail, Esc back, ? help, q quit, Ctrl+P commands. "
        "With --replay, plays a journal through the same screens (space, '.', ',', '[', "
        "']', '<', '>', '+', '-'; n / N next / previous finding, g go to a time)."
    ),
    arguments=_arguments,
    run=_run,
))
