"""Provides the log sink: structured logs (structlog) for people and log shippers, one object a line.

Findings always log, at the level of their severity; the agent's own health (sources up or down,
losses, resyncs, decode failures) always logs; raw events log only with `--log-events`. Every
line carries an ISO-8601 UTC `timestamp` (the event's own time, not the time of writing),
`level`, `event` (a stable snake_case name: `finding`, or the event kind such as `device_bound`)
and flat domain keys named in DOMAIN_KEYS, so a log shipper needs no nested parsing (README, Logs).

`describe()` is the pure half (event -> level, name, fields; the fields are the event's renderer's,
`diag.render.fields`) and is what the tests check; the sink only renders. JSON goes out through orjson; the console format escapes every string with
`diag.common.text.safe`, because interface names, comm and log text are attacker-controlled.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TextIO

import structlog

from diag import events as ev
from diag import render
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


_LAST_SECOND: tuple[int, str] = (-1, "")
"""The newest whole second formatted (lines of a storm share it); replaced, never changed."""


def iso_utc(ts_ns: int) -> str:
    """`2026-11-27T14:53:14.123456Z`: the format of structlog's TimeStamper(fmt="iso", utc=True)."""
    global _LAST_SECOND
    secs, ns = divmod(ts_ns, 1_000_000_000)
    last = _LAST_SECOND
    if last[0] != secs:
        last = _LAST_SECOND = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
    return f"{last[1]}.{ns // 1000:06d}Z"


# --------------------------------------------------------------------------------------------
# Pure: event -> (level, event name, flat fields)
# --------------------------------------------------------------------------------------------


_HEALTH_LEVEL: dict[type[ev.Event], Callable[[Any], str]] = {
    ev.SourceStateChanged: lambda e: ("info" if e.up or e.reason == "stopped"
                                      or e.reason.startswith("starting:") else "warning"),
    ev.EventsLost: lambda e: "warning",
    ev.Resynced: lambda e: "info",
    ev.DecodeFailed: lambda e: "warning",
}
"""The agent's own health, logged whether or not raw events are, at these levels."""


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
    """Return (level, event name, flat fields) for one event or finding; None when not logged.

    The fields are the event's renderer's (`diag.render.fields`); this decides the level and
    which events are logged at all."""
    health = _HEALTH_LEVEL.get(type(item))
    if isinstance(item, ev.Finding):
        level = "info" if item.status == "resolved" else LEVEL_BY_SEVERITY.get(item.severity, "warning")
        name, fields = "finding", render.fields(item) or {}
    elif health is not None:
        level, name, fields = health(item), item.kind, render.fields(item) or {}
    elif not log_events:
        return None
    else:
        raw = render.fields(item)
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
    head: dict[str, Any] = {k: event_dict.pop(k) for k in ("timestamp", "level", "event")
                            if k in event_dict}
    return {**head, **event_dict}


def _escape(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Console only: every string through safe(), so no hostile text drives the terminal."""
    return {k: safe(v) if isinstance(v, str) else v for k, v in event_dict.items()}


def _json_serializer(obj: Any, **_: Any) -> str:
    import orjson

    return orjson.dumps(obj, default=str).decode()


def json_line(described: Described) -> str:
    """The JSON line `build_logger(fmt="json")` writes for `describe()`'s result, without
    structlog's processor chain (add_log_level, _timestamp, _order, JSONRenderer): the same
    keys in the same order (timestamp, level, event, then the fields), the same encoder."""
    import orjson

    level, name, fields = described
    out: dict[str, Any] = {"timestamp": fields.pop("timestamp", None) or iso_utc(time.time_ns()),
                           "level": level, "event": name}
    fields.pop("level", None)  # add_log_level would overwrite it, and _order put it first
    out.update(fields)
    return orjson.dumps(out, default=str).decode()


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
        self._json = fmt == "json"
        self._min_level = _LEVELS[level]
        self._writer = structlog.WriteLogger(self._out)
        """Writes a batch's lines at once, under structlog's lock of this stream (the lines of
        other threads' messages never interleave with them)."""
        self._state: HostState | None = None
        self._views: dict[str, DeviceView] | None = None
        self._lock = threading.Lock()

    def write(self, item: ev.Event, /) -> None:
        if not self.log_events and type(item) not in render.ALWAYS_LOGGED:
            return  # not logged: skip the device views (a lock) and the renderer
        d = describe(item, log_events=self.log_events, views=self._device_views())
        if d is None:
            return
        level, name, fields = d
        getattr(self.log, level)(name, **fields)

    def write_batch(self, items: list[ev.Event], /) -> None:
        """`write` each of `items`; in JSON, the batch's lines are rendered here (no structlog
        processors per line) and written with one write and flush."""
        if not self._json:
            for item in items:
                self.write(item)
            return
        always, log_events = render.ALWAYS_LOGGED, self.log_events
        lines: list[str] = []
        for item in items:
            if not log_events and type(item) not in always:
                continue  # not logged: skip the device views (a lock) and the renderer
            d = describe(item, log_events=log_events, views=self._device_views())
            if d is not None and _LEVELS[d[0]] >= self._min_level:
                lines.append(json_line(d))
        if lines:
            self._writer.msg("\n".join(lines))

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
