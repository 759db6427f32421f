"""Provides `vfiowatch run`: the long-running agent (sources -> core -> journal, logs, metrics).

Composition only: the runtime (`diag.runtime.Pipeline`) runs sources, the merge window and the
core; this module builds the sinks from the command line, starts everything in order, speaks
systemd's notify protocol, and on SIGTERM/SIGINT drains, flushes and exits 0 within 2 s. SIGHUP
reopens the journal (logrotate).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diag import __version__
from diag.cli import command
from diag.errors import ConfigError, DiagError
from diag.paths import HostPaths

DEFAULT_JOURNAL = "/var/lib/vfiowatch/journal.jsonl"
HEALTHY_WITHIN_S = 10.0
"""/healthz and the watchdog fail when the core thread has not called the sinks for this long
(it flushes them every second even when idle)."""
STOP_BUDGET_S = 1.3
"""Of the 2 s allowed between SIGTERM and exit, what the pipeline's drain and flush may take;
the rest is for the interpreter's exit."""


TRIM_AT_S = (10.0, 30.0)
TRIM_EVERY_S = 300.0
"""When the heap is handed back to the kernel: twice after start-up (bcc's LLVM compile frees
about 50 MB that glibc would keep: 200 -> 148 MB measured), then every five minutes (after
bursts). Each call costs about a millisecond."""


def _trim_heap() -> None:
    """glibc `malloc_trim(0)`: return freed heap pages to the kernel; a no-op elsewhere."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def parse_size(text: str) -> int:
    """`65536`, `64K`, `64M`, `1G` (binary multiples) -> bytes."""
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if s and s[-1] in "KMG":
        mult = 1024 ** ("KMG".index(s[-1]) + 1)
        s = s[:-1]
    try:
        n = int(float(s) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r}; use e.g. 65536, 512K, 64M, 1G") from None
    if n < 4096:
        raise argparse.ArgumentTypeError(f"size {text!r} is below the 4K minimum")
    return n


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


@command
def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run the agent as a service: structured logs, a journal, Prometheus metrics",
        description=(
            "Run every available source (kernel uevents, rtnetlink links, eBPF attribution, "
            "Kata context), the core and the sinks until SIGTERM or SIGINT; then drain, flush "
            "and exit 0 within 2 s. Logs go to stdout (one JSON object per line, README 'Logs'); "
            "every event and finding goes to a rotating journal that `vfiowatch postmortem` and "
            "the dashboard replay; metrics are served when --metrics-addr is given. SIGHUP "
            "reopens the journal. Speaks systemd's notify protocol (Type=notify, WatchdogSec)."
        ),
    )
    p.add_argument("--journal", metavar="PATH",
                   help=f"journal file (default {DEFAULT_JOURNAL} when run as root, none "
                        "otherwise); rotated parts are PATH.NNNNNN.gz beside it; PATH.lock "
                        "holds it for one agent at a time (a second one exits 2 naming the first)")
    p.add_argument("--no-journal", action="store_true", help="write no journal")
    p.add_argument("--journal-max-bytes", type=parse_size, default=64 * 1024 * 1024,
                   metavar="SIZE", help="rotate the journal at this size (default 64M)")
    p.add_argument("--journal-keep", type=int, default=8, metavar="N",
                   help="compressed journal parts to keep (default 8)")
    p.add_argument("--journal-fsync-interval", type=float, default=1.0, metavar="SECONDS",
                   help="fdatasync the journal at most this often while writing, and on every "
                        "flush (default 1; 0 = after every record)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML configuration: [core] thresholds and allow-lists (README, "
                        "Configuration), [sources] options passed to the sources")
    p.add_argument("--log-events", action="store_true",
                   help="log every raw event too, not only findings and the agent's health")
    p.add_argument("--log-format", choices=("json", "console"), default="json",
                   help="json: one object per line for log shippers (default); console: for "
                        "people (hostile strings escaped)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="lowest level logged (default info)")
    p.add_argument("--metrics-addr", nargs="?", const="127.0.0.1", metavar="ADDR",
                   help="serve Prometheus metrics and /healthz on ADDR (HOST:PORT; a bare "
                        "--metrics-addr or a bare port means 127.0.0.1, port 9477 by default); "
                        "off unless given")
    p.add_argument("--sources", type=_names, metavar="NAMES",
                   help="comma-separated sources to run, in order (default: every registered one)")
    p.add_argument("--disable-source", type=_names, action="extend", default=[], metavar="NAMES",
                   help="comma-separated sources not to run (repeatable)")
    p.set_defaults(func=run)


def _load_config(path: Path | None, paths: HostPaths) -> tuple[Any, dict[str, Any]]:
    """[core] thresholds (plus driverctl's vfio-pci overrides under --root) and [sources] tables;
    errors name the file, line and key (diag.config.load)."""
    from diag.config import load

    cfg = load(path, paths=paths)
    return cfg.core, cfg.sources


def _runtime_families(pipe: Any) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    s = pipe.stats
    yield CounterMetricFamily("vfiowatch_runtime_late_events",
                              "events that arrived after their merge window closed", value=s.late)
    yield CounterMetricFamily("vfiowatch_runtime_sink_errors",
                              "exceptions raised by sinks (each logged)", value=s.sink_errors)
    yield GaugeMetricFamily("vfiowatch_runtime_queue_depth_max_events",
                            "deepest the source queue has been", value=s.max_queue_depth)
    restarts = CounterMetricFamily("vfiowatch_source_restarts",
                                   "times a crashed source was restarted", labels=["source"])
    for name, st in s.sources.items():
        restarts.add_metric([name], st.restarts)
    yield restarts


class _ToStructlog(logging.Handler):
    """Python `logging` records (the runtime's source crashes, library warnings) as JSON lines."""

    def __init__(self, log: Any) -> None:
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info:
                fields["exception"] = "".join(traceback.format_exception(*record.exc_info))
            level = record.levelname.lower()
            level = level if level in ("debug", "info", "warning", "error", "critical") else "error"
            getattr(self._log, level)("python_log", **fields)
        except Exception:  # logging must never raise into the agent
            self.handleError(record)


def run(args: argparse.Namespace) -> int:
    """The `run` subcommand: build, start, wait for a signal, stop within 2 s."""
    from diag.sinks.logs import LogSink
    from diag.sources import load_builtin

    logs = LogSink(fmt=args.log_format, log_events=args.log_events, level=args.log_level)
    log = logs.log
    root_logger = logging.getLogger()
    root_logger.addHandler(_ToStructlog(log))
    root_logger.setLevel(logging.INFO)
    paths = HostPaths.at(args.root)
    paths.require_sysfs()
    core_config, source_options = _load_config(args.config, paths)

    registry = load_builtin()
    names = args.sources if args.sources else list(registry)
    unknown = [n for n in [*names, *args.disable_source] if n not in registry]
    if unknown:
        raise ConfigError(f"unknown source(s): {', '.join(unknown)}",
                          hint="known sources: " + (", ".join(registry) or "(none registered)"))
    names = [n for n in names if n not in args.disable_source]

    # Every thread made from here on (sinks, metrics server, sources, their helpers) inherits a
    # mask that blocks these signals, so the kernel delivers them to the main thread, whose
    # wait they interrupt at once. Otherwise a SIGTERM landing on a source thread would wait
    # for the main loop's next wake-up (up to 5 s), past the 2 s stop promise.
    handled = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    try:
        return _serve(args, logs, paths, core_config, source_options, names, handled)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)


def _serve(args: argparse.Namespace, logs: Any, paths: HostPaths, core_config: Any,
           source_options: dict[str, Any], names: list[str], handled: set[signal.Signals]) -> int:
    """Build sources and sinks with `handled` signals blocked, start them, serve until stopped."""
    from diag.core.correlator import Correlator
    from diag.runtime import Pipeline, PipelineOptions, build_sources
    from diag.sdnotify import Notifier
    from diag.sinks.journal import JournalSink, default_header
    from diag.sinks.metrics import MetricsSink
    from diag.sources import SourceContext

    log = logs.log
    correlator = Correlator(core_config)

    def report(level: str, event: str, **fields: Any) -> None:
        getattr(log, level)(event, **fields)

    journal: JournalSink | None = None
    journal_path = args.journal
    if journal_path is None and not args.no_journal and os.geteuid() == 0:
        journal_path = DEFAULT_JOURNAL
    if journal_path and not args.no_journal:
        started_ns = time.time_ns()
        try:
            journal = JournalSink(
                journal_path, max_bytes=args.journal_max_bytes, keep=args.journal_keep,
                fsync_interval_s=args.journal_fsync_interval, state=correlator.snapshot,
                header=lambda part: default_header(part, root=str(paths.root), paths=paths,
                                                   started_ns=started_ns),
                report=report,
            )
        except OSError as exc:
            raise DiagError(f"cannot open the journal {journal_path}: {exc.strerror or exc}",
                            hint="pass a writable --journal PATH, or --no-journal",
                            title="Journal unavailable") from None
    else:
        log.info("journal_disabled",
                 reason="--no-journal" if args.no_journal else "not root and no --journal")
    # Sources only after the journal: a second agent on the same journal (JournalInUse) stops
    # before it has started or probed anything.
    sources, unavailable = build_sources(
        SourceContext(paths=paths, options=source_options), names
    )

    pipe = Pipeline(sources, correlator=correlator, unavailable=unavailable,
                    options=PipelineOptions(stop_timeout_s=STOP_BUDGET_S))
    metrics = MetricsSink(journal=journal.stats if journal else None,
                          extra=[lambda: _runtime_families(pipe)])
    for sink in (journal, logs, metrics):
        if sink is not None:
            pipe.add_sink(sink)

    def health() -> tuple[bool, str]:
        age = time.monotonic() - metrics.last_beat
        if not pipe.running:
            return False, "the pipeline is not running"
        if age > HEALTHY_WITHIN_S:
            return False, f"the core thread has been silent for {age:.0f} s"
        return True, f"core active {age:.1f} s ago"

    stop = threading.Event()
    got: list[str] = []

    def on_stop(signum: int, _frame: Any) -> None:
        got.append(signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: Any) -> None:
        if journal is not None:
            journal.reopen()
        log.info("sighup", action="journal reopen requested" if journal else "nothing to reopen")

    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stuck agent shows its stacks
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    metrics_bound = None
    if args.metrics_addr is not None:
        try:
            metrics_bound = metrics.start_server(args.metrics_addr, health)
        except (OSError, ValueError) as exc:
            raise DiagError(f"cannot serve metrics on {args.metrics_addr}: {exc}",
                            hint="pick a free HOST:PORT for --metrics-addr",
                            title="Metrics unavailable") from None

    pipe.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)  # main thread only: threads keep it
    for text in paths.refusals.take():  # the agent's own reads (driverctl, boot id); sources report theirs
        log.warning("path_refused", reason=f"refused to read outside --root: {text}")
    log.info(
        "agent_started", version=__version__, pid=os.getpid(), root=str(paths.root),
        sources=[s.name for s in sources],
        unavailable={n: a.reason for n, a in unavailable},
        journal=str(journal.path) if journal else None,
        metrics=f"http://{metrics_bound[0]}:{metrics_bound[1]}/metrics" if metrics_bound else None,
    )
    notifier = Notifier()

    def status() -> str:
        st = pipe.state()
        up = sum(1 for s in pipe.stats.sources.values() if s.up)
        text = f"{up}/{len(sources)} sources up"
        if st is not None:
            text += f", {st.events_total} events, {len(st.active_findings)} active findings"
        if journal is not None and not journal.stats.writable:
            text += ", journal writes FAILING"
        return text

    notifier.ready(status())
    period = min(notifier.watchdog_s or 5.0, 5.0)
    last_status = ""
    started = time.monotonic()
    trims = [started + t for t in TRIM_AT_S]
    while not stop.wait(min(period, max(0.1, trims[0] - time.monotonic()))):
        if time.monotonic() >= trims[0]:
            _trim_heap()
            trims = trims[1:] or [time.monotonic() + TRIM_EVERY_S]
        ok, detail = health()
        if ok:
            notifier.watchdog()
        else:
            log.error("agent_unhealthy", reason=detail)
        text = status()
        if text != last_status:
            notifier.status(text)
            last_status = text

    t0 = time.monotonic()
    notifier.stopping("draining and flushing")
    pipe.stop()
    # The metrics server is left to die with the process: a graceful shutdown waits for its
    # poll loop (up to 0.25 s) and scrapes during the stop still see the final state.
    notifier.close()
    st = pipe.state()
    lingering = sorted(n for n, s in pipe.stats.sources.items() if s.up)
    log.info(
        "agent_stopped", signal=got[0] if got else None,
        stop_seconds=round(time.monotonic() - t0, 3),
        events=st.events_total if st else 0, findings=st.findings_total if st else 0,
        dropped=pipe.stats.dropped,
        journal_records=journal.stats.records_written if journal else None,
        sources_still_stopping=lingering or None,
    )
    logs.flush()
    if lingering:
        # A source still inside a blocking call (bcc's perf poll) would race the interpreter's
        # exit handlers (bcc's atexit detach fails noisily on fds being closed under it). The
        # journal is closed and the logs are flushed; the kernel releases probes, sockets and
        # fds with the process, so leave now, with the status a clean stop has.
        os._exit(0)
    return 0
