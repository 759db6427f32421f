"""Provides the Kubernetes Events sink: findings as Events on the node, and on the VF's pod.

Like node-problem-detector, what the agent finds shows where Kubernetes users look: `kubectl
describe node`, `kubectl describe pod`, `kubectl events`. It speaks events.k8s.io/v1 the way
client-go's event broadcaster does (k8s.io/client-go/tools/events): the first occurrence is
created (POST), a repeat turns it into a series (PATCH `series.count`, `lastObservedTime`),
later repeats are counted and sent when the series has been quiet for `finish_s` or every
`refresh_s`. Node events name the node with its name as uid (as NPD and the kubelet do, which
`kubectl describe node` finds); pod events carry the pod's uid, read once from the API (core/v1
GET pod), so `kubectl describe pod` shows them.

It must never slow the agent: `write()` only puts a small record on a bounded queue (a full
queue drops it and counts the drop); one worker thread talks to the API server with timeouts.
Drops and failures are counted (metrics), logged once per cause, and reported in-band: when
the API answers again, a `VfiowatchEventsLost` Warning on the node says how many were lost.
In a pod it uses the service account's token (re-read when it rotates) and CA, and the API
server of KUBERNETES_SERVICE_HOST/PORT, as client-go's in-cluster configuration does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from diag import events as ev
from diag.common.errors import ConfigError
from diag.core.state import HostState

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NOTE_MAX_BYTES = 1024
"""The API server refuses a longer note (NoteLengthLimit, pkg/apis/core/validation/events.go)."""
REASON_MAX = 128
INSTANCE_MAX = 128

API_PERMISSIONS = (
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    ("", "pods", "get"),
)
"""(API group, resource, verb) of every request the sink makes: the RBAC it needs
(deploy/daemonset.yaml's ClusterRole is tested against it)."""

Report = Callable[..., None]
"""report(level, event, **fields): a log line of the agent's own."""


@dataclass(frozen=True, slots=True)
class K8sOptions:
    """The `[k8s]` table of the agent's configuration."""

    events: bool = False
    """Send findings as Kubernetes Events."""
    min_severity: str = "warning"
    """Findings below this severity are not sent (their resolution neither)."""
    node_name: str = ""
    """The node the agent runs on; default $NODE_NAME (the DaemonSet sets it)."""
    api_server: str = ""
    """https://HOST:PORT; default from KUBERNETES_SERVICE_HOST/PORT (in a pod)."""
    serviceaccount_dir: str = SA_DIR
    """Where the pod's token and ca.crt are mounted."""
    reporting_controller: str = "vfiowatch"
    queue_size: int = 1000
    timeout_s: float = 5.0
    retry_s: float = 10.0
    """First wait after a failed request (doubled up to 5 minutes)."""
    max_tries: int = 12
    finish_s: float = 360.0
    """A series quiet this long is sent a last time and forgotten (client-go: 6 minutes)."""
    refresh_s: float = 1800.0
    """A live series is sent at least this often (client-go: 30 minutes)."""
    pod_uid_ttl_s: float = 60.0


OPTIONS = tuple(f.name for f in fields(K8sOptions))


def parse_options(table: Mapping[str, Any], path: str = "<config>",
                  lines: Mapping[str, int] | None = None) -> K8sOptions:
    """The `[k8s]` table -> K8sOptions; ConfigError naming the file, line and key otherwise."""
    lines = lines or {}
    defaults = K8sOptions()
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}:{lines[f'k8s.{key}']}" if f"k8s.{key}" in lines else path
        if key not in OPTIONS:
            raise ConfigError(f"{where}: unknown key k8s.{key}",
                              hint="[k8s] takes: " + ", ".join(OPTIONS))
        want = type(getattr(defaults, key))
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"{where}: k8s.{key} must be a {want.__name__}, got {value!r}",
                              hint=f"for example {key} = {getattr(defaults, key)!r}".replace(
                                  "'", '"').replace("True", "true").replace("False", "false"))
        if key == "min_severity":
            try:
                ev.Severity.parse(value)
            except ValueError:
                raise ConfigError(f"{where}: k8s.min_severity {value!r} is not a severity",
                                  hint="one of info, warning, error, critical") from None
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"{where}: k8s.{key} must be positive, got {value!r}",
                              hint=f"the default is {getattr(defaults, key)!r}")
        values[key] = value
    return K8sOptions(**values)


# ---- the Event objects (pure) ---------------------------------------------------------------


def reason_of(rule: str) -> str:
    """`vfio-bind-coldplug-disabled` -> `VfioBindColdplugDisabled` (the kubelet's style)."""
    return "".join(p[:1].upper() + p[1:] for p in rule.replace("_", "-").split("-") if p)[:REASON_MAX]


def micro_time(ts_ns: int) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    secs, ns = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1000:06d}Z"


def clip_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, on a character boundary, marked with an ellipsis."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "…"


def note_of(f: ev.Finding) -> str:
    if f.status == "resolved":
        text = f"Resolved ({f.resolved_reason or 'condition cleared'}): {f.summary}"
    else:
        text = f.summary + (f" Remedy: {f.remedy}" if f.remedy else "")
    return clip_utf8(" ".join(text.split()), NOTE_MAX_BYTES)


def node_ref(node: str) -> dict[str, str]:
    # The node's name as its uid, as NPD and the kubelet do: `kubectl describe node` looks for
    # both the node's uid and its name.
    return {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node}


def pod_ref(namespace: str, name: str, uid: str | None) -> dict[str, str]:
    ref = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name}
    if uid:
        ref["uid"] = uid
    return ref


@dataclass(frozen=True, slots=True)
class Occurrence:
    """What write() queues: the few fields of a finding the Events need (cheap to build)."""

    ts_ns: int
    rule: str
    warning: bool
    resolved: bool
    note: str
    pod: str | None
    pod_namespace: str | None


def occurrence(f: ev.Finding, min_severity: ev.Severity) -> Occurrence | None:
    """The Event-worthy part of a finding, or None when it is below `min_severity`."""
    if f.severity < min_severity:
        return None
    resolved = f.status == "resolved"
    return Occurrence(ts_ns=f.ts_ns, rule=f.rule, warning=not resolved, resolved=resolved,
                      note=note_of(f), pod=f.pod,
                      pod_namespace=f.pod_namespace if f.pod else None)


def make_event(*, regarding: Mapping[str, str], related: Mapping[str, str] | None,
               occ: Occurrence, controller: str, instance: str,
               reason: str | None = None, action: str | None = None) -> dict[str, Any]:
    """The events.k8s.io/v1 Event for one occurrence about `regarding` (client-go's makeEvent)."""
    ns = regarding.get("namespace") or "default"
    ev_obj: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"{regarding['name']}.{time.time_ns():x}", "namespace": ns},
        "eventTime": micro_time(occ.ts_ns),
        "reportingController": controller,
        "reportingInstance": instance[:INSTANCE_MAX],
        "action": action or ("Resolved" if occ.resolved else "Detected"),
        "reason": reason or reason_of(occ.rule),
        "regarding": dict(regarding),
        "note": occ.note,
        "type": "Warning" if occ.warning else "Normal",
    }
    if related is not None:
        ev_obj["related"] = dict(related)
    return ev_obj


def key_of(e: Mapping[str, Any]) -> str:
    """Events with the same key are one series (client-go's eventKey, plus the note: two VFs
    with the same problem on one node stay two Events)."""
    parts = [e["type"], e["action"], e["reason"], e["reportingController"],
             e["reportingInstance"], e["regarding"], e.get("related"), e["note"]]
    return json.dumps(parts, sort_keys=True)


# ---- the API client ------------------------------------------------------------------------


class ApiError(Exception):
    """A request the API server answered with an error status (or could not be made)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retry(self) -> bool:
        """Worth trying again: no answer, throttled or a server error (client-go's rule)."""
        return self.status == 0 or self.status == 429 or self.status >= 500


class ApiClient:
    """HTTPS to the API server with the service account's bearer token and CA."""

    def __init__(self, server: str, token_file: Path, ca_file: Path, timeout_s: float) -> None:
        u = urllib.parse.urlsplit(server)
        if u.scheme != "https" or not u.hostname:
            raise ConfigError(f"k8s API server {server!r} is not an https:// URL",
                              hint="set [k8s] api_server = \"https://HOST:PORT\", or run in a pod")
        self.host, self.port = u.hostname, u.port or 443
        self.token_file = token_file
        self.timeout_s = timeout_s
        try:
            self.context = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot read the API server's CA {ca_file}: {exc}",
                              hint="mount the service account (automountServiceAccountToken: "
                                   "true) or set [k8s] serviceaccount_dir") from None
        self._token = ""
        self._token_mtime = -1.0
        self._conn: http.client.HTTPSConnection | None = None
        self._token_value()  # fail at start, not at the first finding

    def _token_value(self) -> str:
        """The token, re-read when the file changes (bound tokens rotate about hourly)."""
        try:
            mtime = self.token_file.stat().st_mtime
            if mtime != self._token_mtime:
                self._token = self.token_file.read_text().strip()
                self._token_mtime = mtime
        except OSError as exc:
            if not self._token:
                raise ConfigError(f"cannot read the service account token {self.token_file}: "
                                  f"{exc.strerror or exc}",
                                  hint="mount the service account (automountServiceAccountToken:"
                                       " true) or set [k8s] serviceaccount_dir") from None
        return self._token

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        """One request; the decoded JSON answer, or ApiError (status 0: no answer)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token_value()}",
                   "Accept": "application/json", "User-Agent": "vfiowatch"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more, fresh
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPSConnection(
                        self.host, self.port, timeout=self.timeout_s, context=self.context)
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                status = resp.status
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or not isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError):
                    raise ApiError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from None
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {}
        if status >= 400:
            raise ApiError(status, str(doc.get("reason") or http.client.responses.get(status, "")),
                           str(doc.get("message") or raw[:200].decode("utf-8", "replace")))
        return doc if isinstance(doc, dict) else {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def in_cluster_server(env: Mapping[str, str]) -> str:
    """The API server a pod reaches (client-go's rest.InClusterConfig)."""
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        return ""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


# ---- the sink -------------------------------------------------------------------------------


@dataclass
class K8sStats:
    """What the sink did (metrics read it)."""

    created: int = 0
    patched: int = 0
    dropped: int = 0
    """Findings not queued: the queue was full."""
    failed: dict[str, int] = field(default_factory=dict)
    """Requests given up, by the API's reason (`Forbidden`, `Unreachable`, ...)."""
    lost_reported: int = 0
    """Losses announced in band (the node's VfiowatchEventsLost Events)."""
    queue_depth: int = 0
    series: int = 0


@dataclass
class _Series:
    event: dict[str, Any]
    """The Event as last sent (its name is the server's)."""
    last_seen: float
    count: int = 1
    last_observed: str = ""
    dirty: bool = False
    last_sent: float = 0.0


class K8sEventsSink:
    """Findings -> Kubernetes Events, off the core thread."""

    name: ClassVar[str] = "k8s-events"

    def __init__(self, opts: K8sOptions, *, env: Mapping[str, str] | None = None,
                 report: Report | None = None, clock: Callable[[], float] = time.monotonic,
                 client: ApiClient | None = None) -> None:
        env = os.environ if env is None else env
        self.opts = opts
        self.node = opts.node_name or env.get("NODE_NAME", "")
        if not self.node:
            raise ConfigError("[k8s] events = true needs the node's name",
                              hint="set NODE_NAME (the DaemonSet sets it from spec.nodeName) or "
                                   "[k8s] node_name")
        server = opts.api_server or in_cluster_server(env)
        if not server and client is None:
            raise ConfigError("[k8s] events = true, but no API server is known",
                              hint="run in a pod (KUBERNETES_SERVICE_HOST/PORT), or set [k8s] "
                                   "api_server")
        sa = Path(opts.serviceaccount_dir)
        self.client = client or ApiClient(server, sa / "token", sa / "ca.crt", opts.timeout_s)
        self.min_severity = ev.Severity.parse(opts.min_severity)
        self.instance = f"{opts.reporting_controller}-{self.node}"
        self.report = report or (lambda *a, **k: None)
        self.clock = clock
        self.stats = K8sStats()
        self._q: queue.Queue[Occurrence | None] = queue.Queue(maxsize=opts.queue_size)
        self._series: dict[str, _Series] = {}
        self._uids: dict[tuple[str, str], tuple[bool, str | None, float]] = {}
        self._logged: set[str] = set()
        self._unreported = 0
        """Findings given up since the last loss report."""
        self._drops_reported = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="vfiowatch-k8s-events",
                                        daemon=True)
        self._thread.start()

    # ---- Sink protocol (core thread: never blocks) ---------------------------------------

    def write(self, item: ev.Event, /) -> None:
        if not isinstance(item, ev.Finding):
            return
        occ = occurrence(item, self.min_severity)
        if occ is None:
            return
        try:
            self._q.put_nowait(occ)
        except queue.Full:
            self.stats.dropped += 1

    def write_batch(self, items: list[ev.Event], /) -> None:
        """A batch of the core's output: only its findings are looked at."""
        finding = ev.Finding
        for item in items:
            if isinstance(item, finding):
                self.write(item)

    def snapshot(self, state: HostState, /) -> None:
        """Events come from findings only."""

    def flush(self) -> None:
        self.stats.queue_depth = self._q.qsize()

    def reopen(self) -> None:
        """Nothing to reopen."""

    def close(self, timeout: float = 0.3) -> None:
        """Stop the worker: what it can send in `timeout` is sent, the rest is left (the
        journal and the logs have every finding)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._q.put_nowait(None)
        self._thread.join(timeout)
        self.client.close()

    # ---- the worker -----------------------------------------------------------------------

    def _work(self) -> None:
        backoff = 0.0
        pending: Occurrence | None = None
        tries = 0
        while not self._stop.is_set():
            if pending is None:
                try:
                    pending = self._q.get(timeout=1.0)
                except queue.Empty:
                    pending = None
                if pending is None and self._stop.is_set():
                    break
            elif backoff and self._stop.wait(backoff):
                break
            try:
                self._housekeeping()
                if pending is not None:
                    self._record(pending)
                backoff, tries, pending = 0.0, 0, None
            except ApiError as exc:
                self._note_failure(exc)
                tries += 1
                backoff = min(300.0, self.opts.retry_s * 2 ** (tries - 1)) if exc.retry else 0.0
                if pending is not None and exc.retry and tries < self.opts.max_tries:
                    continue  # the same finding again after `backoff`
                if pending is not None:
                    self._count_lost(exc.reason)
                    tries = 0
                pending = None
                if backoff and self._stop.wait(backoff):  # the API is down: wait, then try again
                    break
            except Exception as exc:  # a bug here must not kill the worker
                self._note_failure(ApiError(0, "Error", repr(exc)))
                if pending is not None:
                    self._count_lost("Error")
                pending = None

    def _housekeeping(self) -> None:
        """Series counts and the in-band loss report; an API that refuses them (not one that is
        down) is logged and they are given up, so they never hold up the findings."""
        for step in (self._maintain, self._report_losses):
            try:
                step()
            except ApiError as exc:
                if exc.retry:
                    raise
                self._note_failure(exc)

    def _count_lost(self, reason: str) -> None:
        self.stats.failed[reason] = self.stats.failed.get(reason, 0) + 1
        self._unreported += 1

    def _note_failure(self, exc: ApiError) -> None:
        cause = f"{exc.status} {exc.reason}"
        if cause not in self._logged:  # once per cause: an outage is not a log storm
            self._logged.add(cause)
            hint = ("grant the service account create and patch on events.k8s.io events and get "
                    "on pods (deploy/daemonset.yaml's ClusterRole)" if exc.status == 403
                    else "the agent keeps running; findings are in its logs and journal")
            self.report("warning", "k8s_events_failed", status=exc.status, reason=exc.reason,
                        message=exc.message[:300], hint=hint)

    def _report_losses(self) -> None:
        """In band, like the journal's events_lost: once the API answers again."""
        dropped = self.stats.dropped - self._drops_reported
        lost = self._unreported + dropped
        if lost <= 0:
            return
        # Counted as reported first: a refusal must not make it try again on every finding.
        self._unreported = 0
        self._drops_reported += dropped
        self.report("warning", "events_lost", lost_source="k8s-events", count=lost)
        occ = Occurrence(ts_ns=time.time_ns(), rule="events-lost", warning=True, resolved=False,
                         note=clip_utf8(f"vfiowatch could not send {lost} finding(s) as "
                                        "Kubernetes Events (its queue was full, or the API server "
                                        "refused or did not answer); the node's vfiowatch logs and "
                                        "journal have them all.", NOTE_MAX_BYTES),
                         pod=None, pod_namespace=None)
        try:
            self._create(make_event(regarding=node_ref(self.node), related=None, occ=occ,
                                    controller=self.opts.reporting_controller,
                                    instance=self.instance, reason="VfiowatchEventsLost",
                                    action="Dropped"))
        except ApiError as exc:
            if exc.retry:  # the API is down again: report these with the next losses
                self._unreported += lost
            raise
        self.stats.lost_reported += lost

    def _pod_uid(self, namespace: str, name: str) -> tuple[bool, str | None]:
        """(whether the pod may exist, its uid when known), cached for `pod_uid_ttl_s`."""
        now = self.clock()
        hit = self._uids.get((namespace, name))
        if hit is not None and now - hit[2] < self.opts.pod_uid_ttl_s:
            return hit[0], hit[1]
        path = f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods/{urllib.parse.quote(name)}"
        exists, uid = True, None
        try:
            pod = self.client.request("GET", path)
            uid = str(pod.get("metadata", {}).get("uid") or "") or None
        except ApiError as exc:
            if exc.retry:
                raise
            if exc.status == 404:
                exists = False  # gone: an Event about it would be refused or never seen
            else:
                self._note_failure(exc)  # 403, no `get pods`: the Event goes without the uid
        self._uids[(namespace, name)] = (exists, uid, now)
        return exists, uid

    def _record(self, occ: Occurrence) -> None:
        node = node_ref(self.node)
        if occ.pod and occ.pod_namespace:
            exists, uid = self._pod_uid(occ.pod_namespace, occ.pod)
            pod = pod_ref(occ.pod_namespace, occ.pod, uid)
            if exists:
                self._aggregate(make_event(regarding=pod, related=node, occ=occ,
                                           controller=self.opts.reporting_controller,
                                           instance=self.instance), occ)
            self._aggregate(make_event(regarding=node, related=pod, occ=occ,
                                       controller=self.opts.reporting_controller,
                                       instance=self.instance), occ)
        else:
            self._aggregate(make_event(regarding=node, related=None, occ=occ,
                                       controller=self.opts.reporting_controller,
                                       instance=self.instance), occ)

    def _aggregate(self, body: dict[str, Any], occ: Occurrence) -> None:
        key = key_of(body)
        now = self.clock()
        s = self._series.get(key)
        if s is None:
            sent = self._create(body)
            self._series[key] = _Series(event=sent, last_seen=now, last_sent=now)
            self.stats.series = len(self._series)
            return
        s.last_seen = now
        s.count += 1
        s.last_observed = micro_time(occ.ts_ns)
        if s.count == 2:  # client-go: the second occurrence turns it into a series at once
            self._send_series(s)
        else:
            s.dirty = True

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body["metadata"]["namespace"]
        try:
            out = self.client.request(
                "POST", f"/apis/events.k8s.io/v1/namespaces/{urllib.parse.quote(ns)}/events", body)
        except ApiError as exc:
            if exc.status == 409:  # the same name twice in a nanosecond: it is there
                return body
            raise
        self.stats.created += 1
        return out or body

    def _send_series(self, s: _Series) -> None:
        series = {"count": s.count, "lastObservedTime": s.last_observed}
        meta = s.event.get("metadata", {})
        path = (f"/apis/events.k8s.io/v1/namespaces/{urllib.parse.quote(meta['namespace'])}"
                f"/events/{urllib.parse.quote(meta['name'])}")
        try:
            out = self.client.request("PATCH", path, {"series": series},
                                      content_type="application/strategic-merge-patch+json")
            self.stats.patched += 1
        except ApiError as exc:
            if exc.status != 404:
                raise
            # Gone (events expire after an hour by default): create it again, as a series.
            body = {k: v for k, v in s.event.items() if k not in ("metadata", "series")}
            body["metadata"] = {"name": f"{s.event['regarding']['name']}.{time.time_ns():x}",
                                "namespace": meta["namespace"]}
            body["series"] = series
            out = self._create(body)
        s.event = out or s.event
        s.dirty = False
        s.last_sent = self.clock()

    def _maintain(self) -> None:
        """Send counts of quiet or old series; forget what is over (client-go's finishSeries and
        refreshExistingEventSeries)."""
        now = self.clock()
        for key, s in list(self._series.items()):
            quiet = now - s.last_seen >= self.opts.finish_s
            if s.dirty and (quiet or now - s.last_sent >= self.opts.refresh_s):
                self._send_series(s)
            if quiet:
                del self._series[key]
        self.stats.series = len(self._series)

    # ---- metrics --------------------------------------------------------------------------

    def families(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.stats
        yield CounterMetricFamily("vfiowatch_k8s_events_created",
                                  "Kubernetes Events created (POST)", value=st.created)
        yield CounterMetricFamily("vfiowatch_k8s_events_series_updates",
                                  "series counts sent for repeated Events (PATCH)", value=st.patched)
        yield CounterMetricFamily("vfiowatch_k8s_events_dropped",
                                  "findings not sent because the queue was full", value=st.dropped)
        failed = CounterMetricFamily("vfiowatch_k8s_events_failed",
                                     "findings given up after the API refused or did not answer",
                                     labels=["reason"])
        for reason, n in sorted(st.failed.items()):
            failed.add_metric([reason], n)
        yield failed
        yield GaugeMetricFamily("vfiowatch_k8s_events_queue_depth",
                                "findings waiting to be sent", value=self._q.qsize())
