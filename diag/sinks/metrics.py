"""Provides the metrics sink: a Prometheus collector over the newest HostState, and its HTTP server.

The client_python "custom collector" pattern (node_exporter's `Update`): nothing is counted on
the hot path; each scrape reads the newest snapshot the core published and yields metric
families from it. Names follow `vfiowatch_<what>_<unit>[_total]` (README, Metrics). The server
also answers `/healthz` with the agent's health check (200 while the core thread runs and is
not stuck, else 503), for the DaemonSet's liveness probe.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from diag import __version__
from diag import events as ev
from diag.core.state import HostState
from diag.sinks.journal import JournalStats

DEFAULT_PORT = 9477
"""Port used when `--metrics-addr` is given without one."""

Health = Callable[[], tuple[bool, str]]
"""() -> (healthy, one-line detail)."""


def parse_addr(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT`, `PORT` or `HOST` -> (host, port); loopback by default.

    A bare port binds 127.0.0.1: listening on every interface must be asked for by name
    (`0.0.0.0:9477`, `[::]:9477`).
    """
    s = text.strip()
    host, port = "127.0.0.1", DEFAULT_PORT
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError(f"bad address {text!r}: missing ]")
        host = s[1:end]
        rest = s[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad address {text!r}")
            port = int(rest[1:])
    elif s.isdigit():
        port = int(s)
    elif s.count(":") == 1:
        h, p = s.split(":")
        host = h or host
        port = int(p)
    elif s.count(":") > 1:
        host = s  # a bare IPv6 address
    elif s:
        host = s
    if not 0 <= port <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return host, port


class StateCollector:
    """Yields the agent's metric families from the newest HostState and journal stats."""

    def __init__(self, sink: MetricsSink) -> None:
        self._sink = sink

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families depend on the state (sources, rules)

    def collect(self) -> Iterator[Metric]:
        s = self._sink
        st = s.state
        info = GaugeMetricFamily("vfiowatch_build_info", "vfiowatch version (always 1)",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        if st is not None:
            yield from state_families(st)
        if s.journal is not None:
            yield from journal_families(s.journal)
        for extra in s.extra:
            try:
                yield from extra()
            except Exception:  # a broken extra must not break the scrape
                continue


def state_families(st: HostState) -> Iterator[Metric]:
    """Metric families of one snapshot (pure: the tests call it directly)."""
    up = GaugeMetricFamily("vfiowatch_source_up",
                           "1 when the source runs, 0 when it is down or unavailable",
                           labels=["source"])
    mode = GaugeMetricFamily("vfiowatch_source_mode_info",
                             "the mode a source runs in (kprobe, tracepoint, ...); always 1",
                             labels=["source", "mode"])
    events = CounterMetricFamily("vfiowatch_source_events",
                                 "events the core received from each source", labels=["source"])
    lost = CounterMetricFamily("vfiowatch_source_events_lost",
                               "events each source (or the runtime queue) lost, as reported "
                               "in-band; count=\"exact\": events counted (uevent SEQNUM gaps, "
                               "eBPF and queue counters), count=\"incidents\": losses of "
                               "unknown size (rtnetlink ENOBUFS), one each: a lower bound",
                               labels=["source", "count"])
    resyncs = CounterMetricFamily("vfiowatch_source_resyncs",
                                  "times each source re-read the kernel's state after a loss",
                                  labels=["source"])
    for s in st.sources:
        if s.up or s.reason:  # sources that report health, not stamps such as `runtime`
            up.add_metric([s.name], 1.0 if s.up else 0.0)
        if s.mode:
            mode.add_metric([s.name, s.mode], 1.0)
        events.add_metric([s.name], s.events)
        lost.add_metric([s.name, "exact"], s.lost)
        if s.lost_incidents:
            lost.add_metric([s.name, "incidents"], s.lost_incidents)
        resyncs.add_metric([s.name], s.resyncs)
    yield from (up, mode, events, lost, resyncs)

    active = GaugeMetricFamily("vfiowatch_findings_active",
                               "findings open now, by rule and severity",
                               labels=["rule", "severity"])
    for rule, severity, n in st.counts_by_rule:
        active.add_metric([rule, severity], n)
    yield active
    yield CounterMetricFamily("vfiowatch_findings", "findings opened since the agent started",
                              value=st.findings_total)
    yield CounterMetricFamily("vfiowatch_events", "events the core processed",
                              value=st.events_total)

    by: dict[tuple[str, str], int] = {}
    vfio_vfs = 0
    for d in st.devices:
        key = (d.driver or "none", d.device.role)
        by[key] = by.get(key, 0) + 1
        if d.device.role == "vf" and d.driver == "vfio-pci":
            vfio_vfs += 1
    devices = GaugeMetricFamily("vfiowatch_devices", "PCI devices by bound driver and SR-IOV role "
                                "(pf, vf, none); driver=\"none\" when unbound",
                                labels=["driver", "role"])
    for (driver, role), n in sorted(by.items()):
        devices.add_metric([driver, role], n)
    yield devices
    yield GaugeMetricFamily("vfiowatch_vfs_on_vfio_pci", "SR-IOV VFs bound to vfio-pci now",
                            value=vfio_vfs)
    yield GaugeMetricFamily("vfiowatch_sandboxes", "Kata sandboxes known now",
                            value=len(st.sandboxes))
    exposure = GaugeMetricFamily(
        "vfiowatch_kata_exposure",
        "per Kata runtime handler and known Kata VFIO issue (Kata issue number, or "
        "unknown-version): 1 when the handler is exposed to it now (VFs pods can be given), "
        "0 when it would be once a VF can be given; absent when not exposed",
        labels=["handler", "issue"])
    for a in st.kata_exposure:
        for r in a.rows:
            exposure.add_metric([r.handler, r.issue], 1.0 if r.exposed else 0.0)
    yield exposure
    yield GaugeMetricFamily("vfiowatch_state_timestamp_seconds",
                            "time of the newest event in the snapshot (Unix seconds)",
                            value=st.ts_ns / 1e9)


def journal_families(j: JournalStats) -> Iterator[Metric]:
    """Metric families of the journal's own health."""
    yield GaugeMetricFamily("vfiowatch_journal_writable",
                            "1 while journal writes succeed, 0 while they fail (disk full)",
                            value=1.0 if j.writable else 0.0)
    yield GaugeMetricFamily("vfiowatch_journal_size_bytes", "size of the live journal file",
                            value=j.size_bytes)
    yield CounterMetricFamily("vfiowatch_journal_records_written",
                              "records written to the journal", value=j.records_written)
    yield CounterMetricFamily("vfiowatch_journal_written_bytes",
                              "bytes written to the journal", value=j.bytes_written)
    yield CounterMetricFamily("vfiowatch_journal_records_dropped",
                              "records that could not be written (disk full, I/O error)",
                              value=j.records_dropped)
    errs = CounterMetricFamily("vfiowatch_journal_write_errors",
                               "failed journal writes by errno", labels=["errno"])
    for name, n in sorted(j.write_errors.items()):
        errs.add_metric([name], n)
    yield errs
    yield CounterMetricFamily("vfiowatch_journal_rotations", "journal rotations",
                              value=j.rotations)


class MetricsSink:
    """Keeps the newest snapshot for scrapes; serves /metrics and /healthz when started."""

    name: ClassVar[str] = "metrics"

    def __init__(
        self, *, journal: JournalStats | None = None,
        extra: Iterable[Callable[[], Iterable[Metric]]] = (),
        process_metrics: bool = True,
    ) -> None:
        self.state: HostState | None = None
        self.journal = journal
        self.extra = list(extra)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(self))
        if process_metrics:
            ProcessCollector(namespace="vfiowatch", registry=self.registry)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        """The pipe stop_server() writes to: the server thread sleeps in select() on it."""

    # ---- Sink protocol ------------------------------------------------------------------------

    def write(self, item: ev.Event, /) -> None:
        """Nothing is counted per event: scrapes read snapshots."""

    def write_batch(self, items: list[ev.Event], /) -> None:
        """A batch of the core's output: nothing is counted per event (scrapes read snapshots)."""

    def snapshot(self, state: HostState, /) -> None:
        self.state = state

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        """The HTTP server outlives the core until `stop_server()`: scrapes see the final state."""

    def reopen(self) -> None:
        """Nothing to reopen."""

    # ---- HTTP ---------------------------------------------------------------------------------

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def start_server(self, addr: str, health: Health) -> tuple[str, int]:
        """Listen on `addr` (see parse_addr) in a daemon thread; return the bound (host, port)."""
        host, port = parse_addr(addr)
        sink = self

        class Handler(BaseHTTPRequestHandler):
            server_version = f"vfiowatch/{__version__}"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype = sink.exposition(self.headers.get("Accept", ""))
                    self._send(200, body, ctype)
                elif path == "/healthz":
                    ok, detail = health()
                    self._send(200 if ok else 503, (("ok" if ok else "unhealthy") + f": {detail}\n").encode(),
                               "text/plain; charset=utf-8")
                elif path == "/":
                    self._send(200, b"vfiowatch: see /metrics and /healthz\n",
                               "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds are not news

        family = socket.AF_INET
        try:
            if ipaddress.ip_address(host).version == 6:
                family = socket.AF_INET6
        except ValueError:
            pass  # a host name: resolved by bind() as IPv4

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True
            timeout = 0  # handle_request() is called once select() saw a connection waiting

        self._server = server = Server((host, port), Handler)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._serve, args=(server, self._wake_r),
                                        name="vfiowatch-metrics", daemon=True)
        self._thread.start()
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    @staticmethod
    def _serve(server: ThreadingHTTPServer, wake: int) -> None:
        """Accept until `wake` is readable. socketserver's serve_forever wakes every
        poll_interval to look at its shutdown flag (4 wake-ups a second at 0.25 s, idle): here
        the thread sleeps in select() until a scrape connects or stop_server() writes."""
        with selectors.DefaultSelector() as sel:
            sel.register(server, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while True:
                ready = sel.select()
                if any(key.fd == wake for key, _ in ready):
                    return
                if ready:
                    server.handle_request()  # timeout 0: the connection is already waiting

    def stop_server(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            if self._thread is not None:
                self._thread.join(timeout=2.0)
                self._thread = None
            self._server.server_close()
            self._server = None
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
