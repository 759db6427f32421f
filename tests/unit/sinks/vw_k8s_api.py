"""A local Kubernetes API server for the Events sink's tests: real HTTPS (its own CA, made with
openssl), bearer-token checks, and the recorded conversation of tests/fixtures/k8s served in
order, each request checked against the one recorded.

What it answers (tests/fixtures/k8s/README.md says where each shape comes from): a Pod GET with
a Pod recorded from a real kube-apiserver; an Event POST with the Event plus the metadata the
server sets (uid, resourceVersion, creationTimestamp, managedFields), after the checks the API
server makes on events.k8s.io/v1 creates (the JSON schema of every claimed Kubernetes version,
strict, and ValidateEventCreate's rules); a series PATCH merged into the stored Event; errors
as metav1.Status objects.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate

from tests.conftest import FIXTURES

K8S = FIXTURES / "k8s"
ANY = "<any>"


def make_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=vfiowatch-test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
        "-keyout", "server.key", "-out", "server.csr")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return tmp / "ca.crt", tmp / "server.crt", tmp / "server.key"


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """A metav1.Status error body, as the API server writes it."""
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


def event_create_errors(e: dict[str, Any], versions: list[str]) -> list[str]:
    """What the API server refuses in an events.k8s.io/v1 create: the schema of each version
    (strict), then ValidateEventCreate (pkg/apis/core/validation/events.go)."""
    errs = []
    for v in versions:
        try:
            kubernetes_validate.validate(e, v, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errs.append(f"schema {v}: {exc.message}")
    reg = e.get("regarding", {})
    ns = e.get("metadata", {}).get("namespace", "")
    if reg.get("namespace") and reg["namespace"] != ns:
        errs.append("regarding.namespace: does not match event.namespace")
    if not reg.get("namespace") and ns not in ("default", "kube-system"):
        errs.append("involvedObject.namespace: does not match event.namespace")
    for k, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
        if not e.get(k):
            errs.append(f"{k}: Required value")
        elif len(e[k]) > limit:
            errs.append(f"{k}: can have at most {limit} characters")
    if not re.fullmatch(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?",
                        e.get("reportingController", "")):
        errs.append("reportingController: not a qualified name")
    if len(e.get("note", "").encode()) > 1024:
        errs.append("message: can have at most 1024 characters")
    if not e.get("eventTime"):
        errs.append("eventTime: Required value")
    if e.get("type") not in ("Normal", "Warning"):
        errs.append(f"type: has invalid value: {e.get('type')}")
    for k in ("deprecatedCount", "deprecatedFirstTimestamp", "deprecatedLastTimestamp",
              "deprecatedSource"):
        if e.get(k):
            errs.append(f"{k}: needs to be unset")
    series = e.get("series")
    if series is not None and (series.get("count", 0) < 2 or not series.get("lastObservedTime")):
        errs.append("series: count should be at least 2, lastObservedTime required")
    name = e.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
        errs.append(f"metadata.name: {name!r} is not a DNS subdomain")
    return errs


def matches(expected: Any, got: Any, path: str = "") -> list[str]:
    """Differences where `expected` (a subset, `<any>` matching anything present) and `got` differ."""
    if expected == ANY:
        return [] if got is not None else [f"{path}: missing"]
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{path}: expected an object, got {got!r}"]
        out = []
        for k, v in expected.items():
            out += matches(v, got.get(k), f"{path}.{k}")
        return out
    return [] if expected == got else [f"{path}: expected {expected!r}, got {got!r}"]


class FakeApiServer:
    """The API server, on 127.0.0.1 over TLS. `script`: the recorded conversation to replay (in
    order); `handler`: a function answering instead (outages, refusals)."""

    def __init__(self, tmp: Path, *, token: str, versions: list[str],
                 script: list[dict[str, Any]] | None = None,
                 handler: Callable[[str, str, Any], tuple[int, Any]] | None = None) -> None:
        self.ca, cert, key = make_ca(tmp)
        self.token = token
        self.versions = versions
        self.script = list(script or [])
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.rv = 1000
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as client-go uses it

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                code, doc = outer.answer(self.command, self.path, body,
                                         self.headers.get("Content-Type"),
                                         self.headers.get("Authorization", ""))
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str, body: Any, ctype: str | None,
               auth: str) -> tuple[int, Any]:
        with self.lock:
            self.requests.append({"method": method, "path": path, "body": body,
                                  "content_type": ctype, "auth": auth})
            if auth != f"Bearer {self.token}":
                return 401, status(401, "Unauthorized", "Unauthorized")
            if method == "POST" and path.endswith("/events"):
                errs = event_create_errors(body, self.versions)
                if errs:
                    self.problems += errs
                    return 422, status(422, "Invalid", "; ".join(errs))
            if self.handler is not None:
                return self.handler(method, path, body)
            if not self.script:
                self.problems.append(f"unexpected {method} {path}")
                return 500, status(500, "InternalError", "not in the recorded conversation")
            exp = self.script.pop(0)
            where = f"exchange {exp.get('#')}"
            if exp["request_method"] != method or not re.fullmatch(exp["request_url"], path):
                self.problems.append(f"{where}: expected {exp['request_method']} "
                                     f"{exp['request_url']}, got {method} {path}")
            if exp.get("request_content_type") and exp["request_content_type"] != ctype:
                self.problems.append(f"{where}: content type {ctype!r}")
            if "request_body" in exp:
                self.problems += [f"{where}{d}" for d in matches(exp["request_body"], body)]
            return exp["response_status_code"], self._response(exp, method, path, body)

    def _response(self, exp: dict[str, Any], method: str, path: str, body: Any) -> Any:
        kind = exp.get("response", "")
        if "response_body_file" in exp:
            return json.loads((K8S / exp["response_body_file"]).read_text())
        if "response_body" in exp:
            return exp["response_body"]
        if kind == "created":
            return self.created(body)
        if kind == "patched":
            name = path.rsplit("/", 1)[1]
            stored = self.events[name]
            stored.update(copy.deepcopy(body))  # a strategic merge of {"series": {...}}
            self.rv += 1
            stored["metadata"]["resourceVersion"] = str(self.rv)
            return stored
        raise AssertionError(f"exchange {exp.get('#')}: no response recorded")

    def created(self, body: dict[str, Any]) -> dict[str, Any]:
        """The Event as the API server stores and returns it."""
        out = copy.deepcopy(body)
        self.rv += 1
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out["metadata"].update({
            "uid": str(uuid.uuid4()), "resourceVersion": str(self.rv), "creationTimestamp": now,
            "managedFields": [{"manager": "vfiowatch", "operation": "Update",
                               "apiVersion": "events.k8s.io/v1", "time": now,
                               "fieldsType": "FieldsV1", "fieldsV1": {}}],
        })
        self.events[out["metadata"]["name"]] = out
        return out

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def conversation(name: str) -> list[dict[str, Any]]:
    doc = json.loads((K8S / name).read_text())
    return [dict(x, **{"#": i}) for i, x in enumerate(doc["exchanges"], 1)]
