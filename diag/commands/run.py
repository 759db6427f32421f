"""Provides `vfiowatch run`: the long-running agent (sources -> core -> journal, logs, metrics).

Composition only: the runtime (`diag.runtime.Pipeline`) runs sources, the watermark merge and
the core; this module builds the sinks from the command line, starts everything in order, speaks
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
from diag.commands import Command, register
from diag.commands.agentstate import DEFAULT_JOURNAL
from diag.common.errors import ConfigError, DiagError
from diag.common.paths import HostPaths

HEALTHY_WITHIN_S = 10.0
"""/healthz and the watchdog fail when the core thread has been working this long without
finishing a round or a batch of the sinks (a wedged rule or sink), or has stopped. Idle, it
sleeps until an event comes: it is not woken to prove it lives."""
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
    import contextlib
    import ctypes

    # The process's own symbols (glibc is loaded): no `find_library`, which runs
    # `ldconfig -p` in a child process (11 ms of CPU here, at each trim).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


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


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--journal", metavar="PATH",
                   help=f"journal file (default {DEFAULT_JOURNAL} when run as root, none "
                        "otherwise); its directory must exist (only the default's is created, "
                        "and logged as journal_directory_created); rotated parts are PATH.NNNNNN.gz beside it; PATH.lock "
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
                        "Configuration), [sources] options passed to the sources, [k8s] "
                        "Kubernetes Events (README, Running fleet-wide)")
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


def _load_config(path: Path | None, paths: HostPaths) -> Any:
    """The AgentConfig: [core] thresholds (plus driverctl's vfio-pci overrides under --root),
    [sources], [k8s] and [faults]; errors name the file, line and key (settings.load)."""
    from diag.runtime.settings import load

    return load(path, paths=paths)


def _k8s_events_sink(table: dict[str, Any], report: Any) -> Any:
    """The Kubernetes Events sink when `[k8s] events = true`, else None."""
    from diag.sinks.k8s_events import K8sEventsSink, parse_options

    opts = parse_options(table)
    return K8sEventsSink(opts, report=report) if opts.events else None


def _runtime_families(pipe: Any) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    s = pipe.stats
    yield CounterMetricFamily("vfiowatch_runtime_late_events",
                              "events older than one already released (fed out of order)",
                              value=s.late)
    stalled = CounterMetricFamily(
        "vfiowatch_runtime_stalled_events",
        "events released after max_lateness although this source's watermark had not passed them",
        labels=["source"])
    for name, n in sorted(pipe.merge_stats.stalled.items()):
        stalled.add_metric([name], n)
    yield stalled
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
    from diag.core.rules import RULES
    from diag.sinks.logs import LogSink
    from diag.sources import SOURCES

    logs = LogSink(fmt=args.log_format, log_events=args.log_events, level=args.log_level)
    log = logs.log
    root_logger = logging.getLogger()
    root_logger.addHandler(_ToStructlog(log))
    root_logger.setLevel(logging.INFO)
    paths = HostPaths.at(args.root)
    paths.require_sysfs()
    cfg = _load_config(args.config, paths)

    registry = SOURCES.load()
    for failure in (*registry.failures, *RULES.load().failures):
        log.error("module_import_failed", registry=failure.registry, module=failure.module,
                  error=failure.error)
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
        return _serve(args, logs, paths, cfg, names, handled)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)


def _serve(args: argparse.Namespace, logs: Any, paths: HostPaths, cfg: Any, names: list[str],
           handled: set[signal.Signals]) -> int:
    """Build sources and sinks with `handled` signals blocked, start them, serve until stopped."""
    agent = _Agent(args, logs, paths)
    agent.build(cfg, names)
    agent.handle_signals()
    agent.start(handled)
    agent.serve()
    return agent.stop()


class _Agent:
    """One run of the agent as ordered steps (Falco's app: start-up and teardown in order):
    build the sources, core, journal, pipeline and metrics; take the signals; start; serve
    systemd's notify protocol until a signal; drain, flush and say what was done."""

    def __init__(self, args: argparse.Namespace, logs: Any, paths: HostPaths) -> None:
        self.args = args
        self.logs = logs
        self.log = logs.log
        self.paths = paths
        self.stop_requested = threading.Event()
        self.signals: list[str] = []
        self.journal: Any = None
        self.metrics_bound: tuple[str, int] | None = None

    # ---- building -------------------------------------------------------------------------

    def build(self, cfg: Any, names: list[str]) -> None:
        from diag.core.correlator import Correlator
        from diag.runtime import Pipeline, PipelineOptions, build_sources
        from diag.sinks.metrics import MetricsSink
        from diag.sources import SourceContext

        correlator = Correlator(cfg.core)
        self.faults = cfg.faults
        if cfg.faults.active:
            self.log.warning("faults_injected", **cfg.faults.describe(),
                             note="fault injection ([faults]) is for tests, never a production host")
        self.journal = self._open_journal(correlator)
        # Sources only after the journal: a second agent on the same journal (JournalInUse)
        # stops before it has started or probed anything.
        self.sources, self.unavailable = build_sources(
            SourceContext(paths=self.paths, options=cfg.sources, faults=cfg.faults), names
        )
        self.pipe = pipe = Pipeline(self.sources, correlator=correlator,
                                    unavailable=self.unavailable,
                                    options=PipelineOptions(stop_timeout_s=STOP_BUDGET_S,
                                                            faults=cfg.faults))
        k8s_events = _k8s_events_sink(cfg.k8s, self._report)
        self.metrics = MetricsSink(journal=self.journal.stats if self.journal else None,
                                   extra=[lambda: _runtime_families(pipe),
                                          *([k8s_events.families] if k8s_events else [])])
        for sink in (self.journal, self.logs, self.metrics, k8s_events):
            if sink is not None:
                pipe.add_sink(sink)

    def _report(self, level: str, event: str, **fields: Any) -> None:
        """How a sink reports trouble: a log line at `level`."""
        getattr(self.log, level)(event, **fields)

    def _open_journal(self, correlator: Any) -> Any:
        """The journal sink (--journal, or the default path as root), or None."""
        from diag.sinks.journal import JournalSink, default_header

        args, log, paths = self.args, self.log, self.paths
        journal_path = args.journal
        if journal_path is None and not args.no_journal and os.geteuid() == 0:
            journal_path = DEFAULT_JOURNAL
        if not journal_path or args.no_journal:
            log.info("journal_disabled",
                     reason="--no-journal" if args.no_journal else "not root and no --journal")
            return None

        self._journal_directory(Path(journal_path))
        started_ns = time.time_ns()
        try:
            return JournalSink(
                journal_path, max_bytes=args.journal_max_bytes, keep=args.journal_keep,
                fsync_interval_s=args.journal_fsync_interval, state=correlator.snapshot,
                header=lambda part: default_header(part, root=str(paths.root), paths=paths,
                                                   started_ns=started_ns),
                report=self._report, batch=True, faults=self.faults,
            )
        except OSError as exc:
            raise DiagError(f"cannot open the journal {journal_path}: {exc.strerror or exc}",
                            hint="pass a writable --journal PATH, or --no-journal",
                            title="Journal unavailable") from None

    def _journal_directory(self, path: Path) -> None:
        """The default journal's directory is made when missing (and said so); any other
        missing directory is refused: a mistyped --journal would otherwise make a stray tree as
        root and leave the journal where nobody looks for it."""
        parent = path.parent
        if parent.is_dir():
            return
        if str(path) != DEFAULT_JOURNAL:
            raise DiagError(
                f"the journal's directory {parent} does not exist",
                hint=f"create it first (mkdir -p {parent}), or pass a --journal PATH in an "
                     f"existing directory; only the default's directory ({Path(DEFAULT_JOURNAL).parent}) "
                     "is created",
                title="Journal unavailable")
        try:
            parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise DiagError(f"cannot create the journal's directory {parent}: "
                            f"{exc.strerror or exc}", hint="pass a writable --journal PATH, or "
                            "--no-journal", title="Journal unavailable") from None
        self.log.info("journal_directory_created", path=str(parent))

    # ---- running --------------------------------------------------------------------------

    def handle_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reopens the journal, SIGUSR1 dumps every thread's stack."""
        import faulthandler

        def on_stop(signum: int, _frame: Any) -> None:
            self.signals.append(signal.Signals(signum).name)
            self.stop_requested.set()

        def on_hup(_signum: int, _frame: Any) -> None:
            if self.journal is not None:
                self.journal.reopen()
                self.pipe.request_flush()  # the core thread reopens it now, not at the next write
            self.log.info("sighup", action="journal reopen requested" if self.journal
                          else "nothing to reopen")

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stuck agent shows its stacks
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def start(self, handled: set[signal.Signals]) -> None:
        """Serve metrics (when asked), start the pipeline, let the main thread take signals."""
        args = self.args
        if args.metrics_addr is not None:
            try:
                self.metrics_bound = self.metrics.start_server(args.metrics_addr, self.health)
            except (OSError, ValueError) as exc:
                raise DiagError(f"cannot serve metrics on {args.metrics_addr}: {exc}",
                                hint="pick a free HOST:PORT for --metrics-addr",
                                title="Metrics unavailable") from None
        self.pipe.start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)  # main thread only: threads keep it
        for text in self.paths.refusals.take():  # the agent's own reads (driverctl, boot id)
            self.log.warning("path_refused", reason=f"refused to read outside --root: {text}")
        bound = self.metrics_bound
        self.log.info(
            "agent_started", version=__version__, pid=os.getpid(), root=str(self.paths.root),
            sources=[s.name for s in self.sources],
            unavailable={n: a.reason for n, a in self.unavailable},
            journal=str(self.journal.path) if self.journal else None,
            metrics=f"http://{bound[0]}:{bound[1]}/metrics" if bound else None,
        )

    def health(self) -> tuple[bool, str]:
        """What /healthz and the watchdog report: the pipeline runs and its core thread is
        waiting for events or making progress."""
        if not self.pipe.running:
            return False, "the pipeline is not running"
        stalled = self.pipe.core_stalled_s()
        if stalled is None:
            return False, "the core thread has stopped"
        if stalled > HEALTHY_WITHIN_S:
            return False, f"the core thread has been stuck for {stalled:.0f} s"
        return True, "core waiting for events" if stalled == 0 else f"core busy for {stalled:.1f} s"

    def status(self) -> str:
        """systemd's STATUS= line."""
        pipe = self.pipe
        st = pipe.state()
        up = sum(1 for s in pipe.stats.sources.values() if s.up)
        text = f"{up}/{len(self.sources)} sources up"
        if st is not None:
            text += f", {st.events_total} events, {len(st.active_findings)} active findings"
        if self.journal is not None and not self.journal.stats.writable:
            text += ", journal writes FAILING"
        return text

    def serve(self) -> None:
        """Until a stop signal: watchdog pings while healthy, STATUS on change, heap trims."""
        from diag.runtime.sdnotify import Notifier

        self.notifier = notifier = Notifier()
        notifier.ready(self.status())
        period = min(notifier.watchdog_s or 5.0, 5.0)
        last_status = ""
        trims = [time.monotonic() + t for t in TRIM_AT_S]
        while not self.stop_requested.wait(min(period, max(0.1, trims[0] - time.monotonic()))):
            if time.monotonic() >= trims[0]:
                _trim_heap()
                trims = trims[1:] or [time.monotonic() + TRIM_EVERY_S]
            ok, detail = self.health()
            if ok:
                notifier.watchdog()
            else:
                self.log.error("agent_unhealthy", reason=detail)
            text = self.status()
            if text != last_status:
                notifier.status(text)
                last_status = text

    def stop(self) -> int:
        """Drain and flush within the stop budget, log what was done, exit 0."""
        pipe, journal = self.pipe, self.journal
        t0 = time.monotonic()
        self.notifier.stopping("draining and flushing")
        pipe.stop()
        # The metrics server is left to die with the process: scrapes during the stop still
        # see the final state.
        self.notifier.close()
        st = pipe.state()
        lingering = sorted(n for n, s in pipe.stats.sources.items() if s.up)
        self.log.info(
            "agent_stopped", signal=self.signals[0] if self.signals else None,
            stop_seconds=round(time.monotonic() - t0, 3),
            events=st.events_total if st else 0, findings=st.findings_total if st else 0,
            dropped=pipe.stats.dropped,
            journal_records=journal.stats.records_written if journal else None,
            sources_still_stopping=lingering or None,
        )
        self.logs.flush()
        if lingering:
            # A source still inside a blocking call (bcc's perf poll) would race the
            # interpreter's exit handlers (bcc's atexit detach fails noisily on fds being
            # closed under it). The journal is closed and the logs are flushed; the kernel
            # releases probes, sockets and fds with the process, so leave now, with the status
            # a clean stop has.
            os._exit(0)
        return 0


register(Command(
    name="run",
    help="run the agent as a service: structured logs, a journal, Prometheus metrics",
    description=(
        "Run every available source (kernel uevents, rtnetlink links, eBPF attribution, "
        "Kata context), the core and the sinks until SIGTERM or SIGINT; then drain, flush "
        "and exit 0 within 2 s. Logs go to stdout (one JSON object per line, README 'Logs'); "
        "every event and finding goes to a rotating journal that `vfiowatch postmortem` and "
        "the dashboard replay; metrics are served when --metrics-addr is given. SIGHUP "
        "reopens the journal. Speaks systemd's notify protocol (Type=notify, WatchdogSec)."
    ),
    arguments=_arguments,
    run=run,
))
