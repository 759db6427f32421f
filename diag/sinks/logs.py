"""Provides the log sink: structured logs (structlog) for people and log shippers, one object a line.

Findings always log, at the level of their severity; the agent's own health (sources up or down,
losses, resyncs, decode failures) always logs; raw events log only with `--log-events`. Every
line carries an ISO-8601 UTC `timestamp` (the event's own time, not the time of writing),
`level`, `event` (a stable snake_case name: `finding`, or the event kind such as `device_bound`)
and flat domain keys named in DOMAIN_KEYS, so a log shipper needs no nested parsing (README, Logs).

`describe()` is the pure half (event -> level, name, fields) and is what the tests check; the
sink only renders. JSON goes out through orjson; the console format escapes every string with
`diag.common.text.safe`, because interface names, comm and log text are attacker-controlled.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, TextIO

import structlog

from diag import events as ev
from diag.common.text import safe
from diag.core.state import DeviceView, HostState

DOMAIN_KEYS: tuple[str, ...] = (
    "bdf", "pf", "vf_index", "driver", "previous_driver", "netdev", "netns", "sandbox_id", "pod",
    "namespace", "actor_pid", "actor_comm", "rule", "severity", "finding_id", "synthetic",
)
"""The documented flat keys shared by every line that is about a device, link, sandbox or finding."""

LEVEL_BY_SEVERITY: dict[ev.Severity, str] = {
    ev.Severity.INFO: "info",
    ev.Severity.WARNING: "warning",
    ev.Severity.ERROR: "error",
    ev.Severity.CRITICAL: "critical",
}

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}

Described = tuple[str, str, dict[str, Any]]
"""(level, event name, fields) of one log line."""


def iso_utc(ts_ns: int) -> str:
    """`2026-11-27T14:53:14.123456Z`: the format of structlog's TimeStamper(fmt="iso", utc=True)."""
    secs, ns = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1000:06d}Z"


# --------------------------------------------------------------------------------------------
# Pure: event -> (level, event name, flat fields)
# --------------------------------------------------------------------------------------------


def _pod(sandbox_id: str | None, pod: str | None, namespace: str | None) -> dict[str, Any]:
    """The sandbox/pod keys, only those known."""
    out: dict[str, Any] = {}
    if sandbox_id:
        out["sandbox_id"] = sandbox_id
    if pod:
        out["pod"] = pod
    if namespace:
        out["namespace"] = namespace
    return out


def _actor(p: ev.Process | None) -> dict[str, Any]:
    if p is None:
        return {}
    out: dict[str, Any] = {"actor_pid": p.pid, "actor_comm": p.comm}
    if p.exe:
        out["actor_exe"] = p.exe
    return out | _pod(p.sandbox_id, p.pod, p.pod_namespace)


def _netns(ref: ev.NetnsRef) -> dict[str, Any]:
    return {"netns": ref.label} | _pod(ref.sandbox_id, ref.pod, ref.pod_namespace)


def _health(item: ev.Event) -> Described | None:
    """The agent's own health: logged whether or not raw events are."""
    if isinstance(item, ev.SourceStateChanged):
        f: dict[str, Any] = {"source": item.name, "up": item.up}
        if item.mode:
            f["mode"] = item.mode
        if item.reason:
            f["reason"] = item.reason
        if item.hint:
            f["hint"] = item.hint
        level = "info" if item.up or item.reason == "stopped" else "warning"
        return level, "source_state_changed", f
    if isinstance(item, ev.EventsLost):
        f = {"source": item.lost_source, "count": item.count, "reason": item.reason}
        return "warning", "events_lost", f
    if isinstance(item, ev.Resynced):
        f = {"source": item.resynced_source, "changes": item.changes, "reason": item.reason}
        return "info", "resynced", f
    if isinstance(item, ev.DecodeFailed):
        f = {"source": item.failed_source, "reason": item.reason, "count": item.count}
        if item.sample_hex:
            f["sample_hex"] = item.sample_hex[:128]
        return "warning", "decode_failed", f
    return None


def _finding(f: ev.Finding) -> Described:
    level = "info" if f.status == "resolved" else LEVEL_BY_SEVERITY.get(f.severity, "warning")
    out: dict[str, Any] = {
        "rule": f.rule, "severity": f.severity.label, "finding_id": f.finding_id,
        "status": f.status, "summary": f.summary,
    }
    for key, value in (("bdf", f.bdf), ("pf", f.pf), ("vf_index", f.vf_index),
                       ("netdev", f.netdev), ("netns", f.netns), ("sandbox_id", f.sandbox_id),
                       ("pod", f.pod), ("namespace", f.pod_namespace)):
        if value is not None:
            out[key] = value
    out.update({k: v for k, v in _actor(f.actor).items() if k not in out})
    if f.status == "resolved" and f.resolved_reason:
        out["resolved_reason"] = f.resolved_reason
    if f.remedy and f.status != "resolved":
        out["remedy"] = f.remedy
    out["synthetic"] = f.synthetic
    return level, "finding", out


def _raw(item: ev.Event) -> dict[str, Any] | None:
    """Flat fields of a raw event, or None for events never logged (clock ticks)."""
    e = item
    if isinstance(e, ev.ClockTicked):
        return None
    f: dict[str, Any]
    if isinstance(e, ev.DeviceBound):
        f = {"bdf": e.bdf, "driver": e.driver, "previous_driver": e.previous_driver}
    elif isinstance(e, ev.DeviceUnbound):
        f = {"bdf": e.bdf, "previous_driver": e.previous_driver}
    elif isinstance(e, ev.DeviceAdded):
        f = {"bdf": e.bdf, "pf": e.pf, "vf_index": e.vf_index, "vendor": e.vendor,
             "device": e.device}
    elif isinstance(e, ev.DeviceRemoved):
        f = {"bdf": e.bdf}
    elif isinstance(e, ev.DeviceChanged):
        f = {"bdf": e.bdf, "driver": e.driver, "attribute": e.attribute, "value": e.value}
    elif isinstance(e, ev.NetdevAdded | ev.NetdevRemoved):
        f = {"bdf": e.bdf, "netdev": e.ifname, "ifindex": e.ifindex}
    elif isinstance(e, ev.VfioDeviceAdded | ev.VfioDeviceRemoved):
        f = {"bdf": e.bdf, "iommu_group": e.group, "devname": e.devname}
    elif isinstance(e, ev.LinkChanged):
        f = {"netdev": e.ifname, "ifindex": e.ifindex, **_netns(e.netns),
             "operstate": e.operstate, "carrier": e.carrier, "bdf": e.bdf,
             "link_kind": e.link_kind}
    elif isinstance(e, ev.LinkRemoved):
        f = {"netdev": e.ifname, "ifindex": e.ifindex, **_netns(e.netns), "bdf": e.bdf}
    elif isinstance(e, ev.NetnsAdded | ev.NetnsRemoved):
        f = {**_netns(e.netns), "netns_inode": e.netns.inode}
    elif isinstance(e, ev.SysfsWriteObserved):
        # stage=open (tracepoint mode, open-only variant): result is the fd or the open's
        # -errno, not bytes written; value_recovered marks a value read back or taken from the
        # uevent that followed.
        f = {"bdf": e.bdf, "driver": e.driver, "control": e.control, "value": e.value,
             "path": e.path, "result": e.result, "stage": e.stage,
             "value_recovered": e.value_recovered or None, "ebpf_mode": e.mode,
             **_actor(e.actor)}
    elif isinstance(e, ev.KataConfigLoaded):
        c = e.config
        f = {"handler": c.handler, "cold_plug_vfio": c.cold_plug_vfio,
             "hot_plug_vfio": c.hot_plug_vfio, "path": c.path, "assumed": c.assumed}
    elif isinstance(e, ev.KataConfigInvalid):
        f = {"path": e.path, "message": e.message, "handler": e.handler, "line": e.line,
             "key": e.key, "sandbox_id": e.sandbox_id}
    elif isinstance(e, ev.SandboxStarted):
        f = {"sandbox_id": e.sandbox_id, "pod": e.pod, "namespace": e.pod_namespace,
             "netns": e.netns.label if e.netns else None, "cold_plug_vfio": e.cold_plug_vfio,
             "vfs": ",".join(v.bdf for v in e.vfs) or None}
    elif isinstance(e, ev.SandboxStopped):
        f = {"sandbox_id": e.sandbox_id}
    elif isinstance(e, ev.VfioGroupHeld):
        f = {"iommu_group": e.group, **_actor(e.holder)}
    elif isinstance(e, ev.VfioGroupReleased):
        f = {"iommu_group": e.group, "actor_pid": e.pid}
    elif isinstance(e, ev.LogLineMatched):
        f = {"signature": e.signature, "message": e.text, "origin": e.origin,
             "sandbox_id": e.sandbox_id, "bdf": e.bdf}
    elif isinstance(e, ev.InventoryObserved):
        f = {"devices": len(e.devices),
             "vfs": sum(1 for d in e.devices if d.role == "vf"),
             "vfio_pci": sum(1 for d in e.devices if d.driver == "vfio-pci")}
    else:
        f = {}
    return {k: v for k, v in f.items() if v is not None and v != ""}


def _enrich(fields: dict[str, Any], views: Mapping[str, DeviceView]) -> None:
    """Fill pf, vf_index, sandbox and pod from the newest snapshot for lines about a device."""
    bdf = fields.get("bdf")
    view = views.get(bdf) if isinstance(bdf, str) else None
    if view is None:
        return
    d = view.device
    for key, value in (("pf", d.pf), ("vf_index", d.vf_index), ("sandbox_id", view.sandbox_id),
                       ("pod", view.pod)):
        if value is not None and key not in fields:
            fields[key] = value


def describe(
    item: ev.Event, *, log_events: bool = False, views: Mapping[str, DeviceView] | None = None
) -> Described | None:
    """Return (level, event name, flat fields) for one event or finding; None when not logged."""
    if isinstance(item, ev.Finding):
        level, name, fields = _finding(item)
    else:
        health = _health(item)
        if health is not None:
            level, name, fields = health
        elif not log_events:
            return None
        else:
            raw = _raw(item)
            if raw is None:
                return None
            level, name, fields = "info", item.kind, raw
            fields["source"] = item.source
            fields["synthetic"] = item.synthetic
            if item.resync:
                fields["resync"] = True
    if views:
        _enrich(fields, views)
    fields["timestamp"] = iso_utc(item.ts_ns)
    return level, name, fields


# --------------------------------------------------------------------------------------------
# Rendering (structlog)
# --------------------------------------------------------------------------------------------


def _timestamp(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Stamp the time of writing unless the line already carries its event's time."""
    if "timestamp" not in event_dict:
        event_dict["timestamp"] = iso_utc(time.time_ns())
    return event_dict


def _order(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """timestamp, level, event first, so raw lines read well too."""
    head = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    return {**head, **event_dict}


def _escape(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Console only: every string through safe(), so no hostile text drives the terminal."""
    return {k: safe(v) if isinstance(v, str) else v for k, v in event_dict.items()}


def _json_serializer(obj: Any, **_: Any) -> str:
    import orjson

    return orjson.dumps(obj, default=str).decode()


def build_logger(
    *, fmt: str = "json", stream: TextIO | None = None, level: str = "info",
    colors: bool | None = None,
) -> Any:
    """A self-contained structlog logger (no global configuration, so tests can hold several)."""
    out = stream if stream is not None else sys.stdout
    processors: list[Any] = [structlog.processors.add_log_level, _timestamp]
    if fmt == "json":
        processors += [_order, structlog.processors.JSONRenderer(serializer=_json_serializer)]
    elif fmt == "console":
        if colors is None:
            import os

            colors = bool(getattr(out, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")
        processors += [
            _escape,
            structlog.dev.ConsoleRenderer(colors=colors, sort_keys=False, pad_event_to=24,
                                          exception_formatter=structlog.dev.plain_traceback),
        ]
    else:
        raise ValueError(f"unknown log format {fmt!r}; expected json or console")
    return structlog.wrap_logger(
        structlog.WriteLogger(out),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )


class LogSink:
    """Writes findings, health and (optionally) raw events as structured log lines."""

    name: ClassVar[str] = "logs"

    def __init__(
        self, *, fmt: str = "json", stream: TextIO | None = None, log_events: bool = False,
        level: str = "info", colors: bool | None = None,
    ) -> None:
        self._out = stream if stream is not None else sys.stdout
        self.log = build_logger(fmt=fmt, stream=self._out, level=level, colors=colors)
        """The agent's own messages (start, stop, sources unavailable) go through this too."""
        self.log_events = log_events
        self._state: HostState | None = None
        self._views: dict[str, DeviceView] | None = None
        self._lock = threading.Lock()

    def write(self, item: ev.Event, /) -> None:
        d = describe(item, log_events=self.log_events, views=self._device_views())
        if d is None:
            return
        level, name, fields = d
        getattr(self.log, level)(name, **fields)

    def snapshot(self, state: HostState, /) -> None:
        with self._lock:
            if state is not self._state:
                self._state, self._views = state, None

    def _device_views(self) -> dict[str, DeviceView]:
        with self._lock:
            if self._views is None:
                st = self._state
                self._views = {d.bdf: d for d in st.devices} if st is not None else {}
            return self._views

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out.flush()  # WriteLogger flushes each line; this is belt and braces

    def close(self) -> None:
        self.flush()

    def reopen(self) -> None:
        """stdout is not ours to reopen; journald or the container runtime owns it."""
