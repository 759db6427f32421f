"""The Kubernetes Events sink against a local API server over real HTTPS (tests/unit/sinks/vw_k8s_api.py):
the recorded conversation of tests/fixtures/k8s, refusals, an outage, token rotation, and a
queue that drops rather than blocks. No real API server runs here (README: Running fleet-wide
says what this does and does not prove)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from diag import events as ev
from diag.common.errors import ConfigError
from diag.runtime.settings import parse_text
from diag.sinks.k8s_events import (
    API_PERMISSIONS,
    K8sEventsSink,
    K8sOptions,
    clip_utf8,
    in_cluster_server,
    parse_options,
    reason_of,
)
from tests.unit.deploy.test_daemonset import claimed_versions
from tests.unit.sinks.vw_k8s_api import FakeApiServer, conversation, status

NODE = "v1.36-control-plane"
POD, NS = "kube-proxy-hsdvx", "kube-system"
TS = 1_795_791_194_123_456_789
TOKEN = "token-1"


def finding(status_: str = "open", severity: ev.Severity = ev.Severity.CRITICAL,
            pod: str | None = POD, summary: str = "VF 0000:01:10.2 was rebound to vfio-pci "
                                                  "while cold_plug_vfio=no-port") -> ev.Finding:
    return ev.Finding(
        ts_ns=TS, source="core", finding_id="vfio-bind-coldplug-disabled/0000:01:10.2/1",
        rule="vfio-bind-coldplug-disabled", severity=severity, summary=summary, status=status_,
        bdf="0000:01:10.2", pod=pod, pod_namespace=NS if pod else None,
        remedy="cold_plug_vfio = \"root-port\"" if status_ != "resolved" else "",
        resolved_reason="left vfio-pci" if status_ == "resolved" else "",
    )


def wait_for(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture
def sa_dir(tmp_path: Path) -> Path:
    d = tmp_path / "serviceaccount"
    d.mkdir()
    (d / "token").write_text(TOKEN + "\n")
    return d


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[FakeApiServer]]:
    made: list[FakeApiServer] = []
    yield made
    for s in made:
        s.close()


def start(tmp: Path, sa: Path, servers: list[FakeApiServer], *, env_server: bool = True,
          **kw: Any) -> tuple[FakeApiServer, list[tuple[str, str, dict[str, Any]]],
                              Callable[..., K8sEventsSink]]:
    srv = FakeApiServer(tmp / "pki", token=TOKEN, versions=[claimed_versions()[0],
                                                            claimed_versions()[-1]], **kw)
    servers.append(srv)
    (sa / "ca.crt").write_bytes(srv.ca.read_bytes())
    logged: list[tuple[str, str, dict[str, Any]]] = []
    host, port = srv.url.removeprefix("https://").split(":")
    env = {"NODE_NAME": NODE, "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}

    def sink(clock: Callable[[], float] | None = None, **opts: Any) -> K8sEventsSink:
        o = replace(K8sOptions(events=True, serviceaccount_dir=str(sa), retry_s=0.05), **opts)
        extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
        return K8sEventsSink(o, env=env, report=lambda lvl, e, **f: logged.append((lvl, e, f)),
                             **extra)

    return srv, logged, sink


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "pki").mkdir()
    return tmp_path


def test_the_recorded_conversation(tmp: Path, sa_dir: Path,
                                   servers: list[FakeApiServer]) -> None:
    """One finding on a pod, opened, repeated three times, resolved: exactly the requests of
    tests/fixtures/k8s/conversation.json, in order (GET pod for its uid; POST on the pod and
    the node; PATCH series count 2 at once, 4 once quiet; POST the resolution), each Event
    valid for every claimed Kubernetes version and ValidateEventCreate."""
    script = conversation("conversation.json")
    srv, logged, make = start(tmp, sa_dir, servers, script=script)
    # The sink's own clock, moved by the test: a loaded machine taking more than finish_s
    # between two writes would end the series early (a POST where the PATCH is expected).
    now = [0.0]
    sink = make(finish_s=0.5, clock=lambda: now[0])
    try:
        sink.write(finding())
        assert wait_for(lambda: len(srv.script) == len(script) - 3), srv.problems
        sink.write(finding())
        assert wait_for(lambda: len(srv.script) == len(script) - 5), srv.problems
        sink.write(finding())
        sink.write(finding())
        # both repeats counted (pod's and node's series at 4), then quiet for longer than
        # finish_s: the count is sent
        assert wait_for(lambda: [x.count for x in sink._series.values()] == [4, 4])
        now[0] = 1.0
        assert wait_for(lambda: len(srv.script) == 2), srv.problems
        sink.write(finding("resolved"))
        assert wait_for(lambda: not srv.script), srv.problems
    finally:
        sink.close()
    assert not srv.problems, srv.problems
    assert len(srv.requests) == len(script) and not logged, logged
    pod_event = srv.requests[1]["body"]
    assert pod_event["regarding"]["uid"] == "25835dbf-21bb-4b20-bbd2-c5491d8362eb"
    assert pod_event["eventTime"] == "2026-11-27T14:53:14.123456Z"
    assert pod_event["note"].startswith("VF 0000:01:10.2 was rebound") and "Remedy:" in pod_event["note"]
    assert srv.requests[-1]["body"]["note"].startswith("Resolved (left vfio-pci): ")
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in srv.requests)
    assert (sink.stats.created, sink.stats.patched, sink.stats.dropped) == (4, 4, 0)
    used = {("events.k8s.io" if "/apis/events.k8s.io/" in r["path"] else "",
             "events" if "/events" in r["path"] else "pods",
             {"GET": "get", "POST": "create", "PATCH": "patch"}[r["method"]])
            for r in srv.requests}
    assert used == set(API_PERMISSIONS)  # what the manifest's ClusterRole grants, tested there


def test_findings_below_the_minimum_severity_and_other_events_are_not_sent(
    tmp: Path, sa_dir: Path, servers: list[FakeApiServer]
) -> None:
    """min_severity = "error": a warning finding and raw events make no request."""
    srv, _, make = start(tmp, sa_dir, servers, script=[])
    sink = make(min_severity="error")
    try:
        sink.write(finding(severity=ev.Severity.WARNING))
        sink.write(ev.DeviceBound(ts_ns=TS, source="uevent", bdf="0000:01:10.2", driver="igbvf"))
        sink.write_batch([finding(severity=ev.Severity.WARNING),  # the runtime's way, the same
                          ev.DeviceBound(ts_ns=TS, source="uevent", bdf="0000:01:10.2",
                                         driver="igbvf")])
        sink.flush()
        time.sleep(0.3)
    finally:
        sink.close()
    assert srv.requests == [] and srv.problems == []


def test_a_finding_without_a_pod_goes_on_the_node_only(tmp: Path, sa_dir: Path,
                                                        servers: list[FakeApiServer]) -> None:
    """No pod: one Event, on the node, no pod lookup (handed over in a batch of the runtime's,
    beside a raw event that makes none)."""
    srv, _, make = start(tmp, sa_dir, servers,
                         handler=lambda m, p, b: (201, srv.created(b)))
    sink = make()
    try:
        sink.write_batch([ev.DeviceBound(ts_ns=TS, source="uevent", bdf="0000:01:10.2",
                                         driver="igbvf"), finding(pod=None)])
        assert wait_for(lambda: len(srv.requests) == 1)
        time.sleep(0.2)
    finally:
        sink.close()
    (r,) = srv.requests
    assert r["method"] == "POST" and r["path"] == "/apis/events.k8s.io/v1/namespaces/default/events"
    assert r["body"]["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE}
    assert "related" not in r["body"] and not srv.problems


def test_a_pod_that_is_gone_gets_no_event_but_the_node_does(
    tmp: Path, sa_dir: Path, servers: list[FakeApiServer]
) -> None:
    """GET pod 404: no Event about the deleted pod; the node's Event still names it."""
    def handler(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            return 404, status(404, "NotFound", f'pods "{POD}" not found',
                               {"name": POD, "kind": "pods"})
        return 201, srv.created(body)

    srv, _, make = start(tmp, sa_dir, servers, handler=handler)
    sink = make()
    try:
        sink.write(finding())
        assert wait_for(lambda: len(srv.requests) == 2)
        time.sleep(0.2)
    finally:
        sink.close()
    assert [r["method"] for r in srv.requests] == ["GET", "POST"]
    body = srv.requests[1]["body"]
    assert body["regarding"]["kind"] == "Node" and body["related"]["name"] == POD
    assert "uid" not in body["related"] and not srv.problems


def test_rbac_refusal_is_logged_once_counted_and_not_retried(
    tmp: Path, sa_dir: Path, servers: list[FakeApiServer]
) -> None:
    """403 on every request: one k8s_events_failed line with the fix, each finding counted as
    failed once, no retry storm; the loss report is attempted once and refused too."""
    def handler(method: str, path: str, body: Any) -> tuple[int, Any]:
        group = "events.k8s.io" if "events" in path else ""
        res = "events" if "events" in path else "pods"
        verb = {"GET": "get", "POST": "create"}.get(method, "patch")
        return 403, status(403, "Forbidden",
                           f'{res}{"." + group if group else ""} is forbidden: User '
                           f'"system:serviceaccount:kube-system:vfiowatch" cannot {verb} resource '
                           f'"{res}" in API group "{group}" in the namespace "{NS}"',
                           {"group": group, "kind": res})

    srv, logged, make = start(tmp, sa_dir, servers, handler=handler)
    sink = make()
    try:
        for i in range(3):
            sink.write(finding(summary=f"finding {i}"))
        assert wait_for(lambda: sum(sink.stats.failed.values()) == 3)
        time.sleep(0.3)
    finally:
        sink.close()
    failures = [f for _, e, f in logged if e == "k8s_events_failed"]
    assert len(failures) == 1 and failures[0]["status"] == 403 and "ClusterRole" in failures[0]["hint"]
    assert sink.stats.failed == {"Forbidden": 3}
    # GET pod once (cached), then per finding one POST on the pod, refused; loss reports refused
    posts = [r for r in srv.requests if r["method"] == "POST"]
    assert len([r for r in srv.requests if r["method"] == "GET"]) == 1
    assert len(posts) <= 3 + 3, [r["path"] for r in srv.requests]
    assert [e for _, e, _ in logged].count("events_lost") >= 1


def test_the_queue_drops_and_counts_instead_of_blocking(
    tmp: Path, sa_dir: Path, servers: list[FakeApiServer]
) -> None:
    """An API server that does not answer: write() returns for every finding (the core thread is
    never held), the queue keeps queue_size of them and counts the rest as dropped; when the
    server answers again, a VfiowatchEventsLost Warning on the node says how many were lost,
    and the agent logs events_lost with lost_source k8s-events."""
    gate = threading.Event()

    def handler(method: str, path: str, body: Any) -> tuple[int, Any]:
        gate.wait(30)  # a hung API server (the sink's own timeout is longer in this test)
        return (200, {}) if method == "GET" else (201, srv.created(body))

    srv, logged, make = start(tmp, sa_dir, servers, handler=handler)
    sink = make(queue_size=10, timeout_s=60.0)
    try:
        sink.write(finding(pod=None, summary="first"))
        assert wait_for(lambda: len(srv.requests) == 1)  # the worker is stuck on it
        done = threading.Event()

        def burst() -> None:
            for i in range(1000):
                sink.write(finding(pod=None, summary=f"burst {i}"))
            done.set()

        t = threading.Thread(target=burst)
        t.start()
        assert done.wait(20), "write() blocked while the API server hung"
        assert sink.stats.dropped == 1000 - 10
        gate.set()
        assert wait_for(lambda: any(r["body"] and r["body"].get("reason") == "VfiowatchEventsLost"
                                    for r in srv.requests))
        assert wait_for(lambda: sink.stats.created == 1 + 10 + 1)
    finally:
        gate.set()
        sink.close()
    lost = [r["body"] for r in srv.requests if r["body"] and r["body"]["reason"] == "VfiowatchEventsLost"]
    assert len(lost) == 1 and "990 finding(s)" in lost[0]["note"] and lost[0]["type"] == "Warning"
    assert ("warning", "events_lost", {"lost_source": "k8s-events", "count": 990}) in logged
    assert not srv.problems, srv.problems


def test_an_outage_is_retried_then_counted(tmp: Path, sa_dir: Path,
                                           servers: list[FakeApiServer]) -> None:
    """503 answers: the finding is retried with back-off up to max_tries, then counted as
    failed; after the outage the loss is reported in band and new findings go through."""
    down = threading.Event()
    down.set()

    def handler(method: str, path: str, body: Any) -> tuple[int, Any]:
        if down.is_set():
            return 503, status(503, "ServiceUnavailable", "the server is currently unable to "
                                                          "handle the request")
        return 201, srv.created(body)

    srv, logged, make = start(tmp, sa_dir, servers, handler=handler)
    sink = make(max_tries=3, retry_s=0.02)
    try:
        sink.write(finding(pod=None, summary="during the outage"))
        assert wait_for(lambda: sink.stats.failed.get("ServiceUnavailable") == 1)
        assert len(srv.requests) == 3
        down.clear()
        sink.write(finding(pod=None, summary="after it"))
        assert wait_for(lambda: sink.stats.created == 2)
    finally:
        sink.close()
    reasons = [r["body"]["reason"] for r in srv.requests if r["body"] and r["method"] == "POST"]
    assert reasons[-2:] == ["VfiowatchEventsLost", "VfioBindColdplugDisabled"]
    assert ("warning", "events_lost", {"lost_source": "k8s-events", "count": 1}) in logged


def test_a_rotated_token_is_used(tmp: Path, sa_dir: Path, servers: list[FakeApiServer]) -> None:
    """The kubelet rotates the projected token: the next request carries the new one."""
    srv, _, make = start(tmp, sa_dir, servers, handler=lambda m, p, b: (201, srv.created(b)))
    sink = make()
    try:
        sink.write(finding(pod=None, summary="one"))
        assert wait_for(lambda: sink.stats.created == 1)
        (sa_dir / "token").write_text("token-2\n")
        srv.token = "token-2"
        import os
        os.utime(sa_dir / "token", (time.time() + 5, time.time() + 5))
        sink.write(finding(pod=None, summary="two"))
        assert wait_for(lambda: sink.stats.created == 2)
    finally:
        sink.close()
    assert [r["auth"] for r in srv.requests] == ["Bearer token-1", "Bearer token-2"]


def test_a_server_with_another_ca_is_refused(tmp: Path, sa_dir: Path,
                                             servers: list[FakeApiServer]) -> None:
    """TLS is verified against the service account's ca.crt: another CA, no request gets
    through, and the failure is counted."""
    srv, logged, make = start(tmp, sa_dir, servers, handler=lambda m, p, b: (201, srv.created(b)))
    other = tmp / "other"
    other.mkdir()
    from tests.unit.sinks.vw_k8s_api import make_ca

    ca, _, _ = make_ca(other)
    (sa_dir / "ca.crt").write_bytes(ca.read_bytes())
    sink = make(max_tries=1)
    try:
        sink.write(finding(pod=None))
        assert wait_for(lambda: sink.stats.failed.get("Unreachable") == 1)
    finally:
        sink.close()
    assert srv.requests == []
    assert any("CERTIFICATE_VERIFY_FAILED" in f["message"] for _, e, f in logged
               if e == "k8s_events_failed")


# ---- configuration and pure parts ------------------------------------------------------------


def test_the_k8s_table_is_checked_with_file_and_line() -> None:
    """[k8s] errors name the file, the line and the key."""
    text = '[core]\nstranded_grace = 60\n\n[k8s]\nevents = true\nqueue_size = "big"\n'
    with pytest.raises(ConfigError, match=r"cfg\.toml:6: k8s\.queue_size must be a int"):
        parse_text(text, "cfg.toml")
    with pytest.raises(ConfigError, match=r"cfg\.toml:5: unknown key k8s\.event"):
        parse_text("[k8s]\n\n\n\nevent = true\n", "cfg.toml")
    with pytest.raises(ConfigError, match="min_severity"):
        parse_options({"min_severity": "loud"})
    assert parse_text("[k8s]\nevents = true\n", "c").k8s == {"events": True}
    assert parse_options({"events": True, "finish_s": 60}).finish_s == 60.0


def test_without_a_node_name_or_api_server_it_says_how_to_fix_it(sa_dir: Path) -> None:
    """events = true outside a pod: a clear error at start, not a silent no-op."""
    with pytest.raises(ConfigError, match="node's name") as exc:
        K8sEventsSink(K8sOptions(events=True, serviceaccount_dir=str(sa_dir)), env={})
    assert "NODE_NAME" in exc.value.hint
    with pytest.raises(ConfigError, match="no API server") as exc:
        K8sEventsSink(K8sOptions(events=True, serviceaccount_dir=str(sa_dir)),
                      env={"NODE_NAME": "n"})
    assert "KUBERNETES_SERVICE_HOST" in exc.value.hint


def test_names_and_limits() -> None:
    """Reasons in the kubelet's style, in-cluster URL as client-go builds it, notes cut on a
    character boundary within the API's 1024 bytes."""
    assert reason_of("vfio-bind-coldplug-disabled") == "VfioBindColdplugDisabled"
    assert in_cluster_server({"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                              "KUBERNETES_SERVICE_PORT": "443"}) == "https://10.96.0.1:443"
    assert in_cluster_server({"KUBERNETES_SERVICE_HOST": "fd00::1",
                              "KUBERNETES_SERVICE_PORT": "443"}) == "https://[fd00::1]:443"
    cut = clip_utf8("é" * 1000, 1024)
    assert len(cut.encode()) <= 1024 and cut.endswith("…")


def test_an_invalid_answer_is_not_retried(tmp: Path, sa_dir: Path,
                                          servers: list[FakeApiServer]) -> None:
    """422 Invalid (a metav1.Status as recorded from a real API server): the finding is given
    up at once (retrying the same object cannot help), counted, and logged with the message."""
    import json

    from tests.unit.sinks.vw_k8s_api import K8S

    recorded = json.loads((K8S / "status-422-v1-36.json").read_text())
    srv, logged, make = start(tmp, sa_dir, servers, handler=lambda m, p, b: (422, recorded))
    sink = make()
    try:
        sink.write(finding(pod=None))
        assert wait_for(lambda: sink.stats.failed.get("Invalid") == 1)
        time.sleep(0.3)
    finally:
        sink.close()
    assert len([r for r in srv.requests if r["body"] and r["body"]["reason"] != "VfiowatchEventsLost"]) == 1
    (f,) = [f for _, e, f in logged if e == "k8s_events_failed"]
    assert f["status"] == 422 and "spec.prop2: Required value" in f["message"]
