"""Provides the importer of the agent's own JSON log lines (what Loki, Elasticsearch or `kubectl logs` hold).

`vfiowatch run` logs one flat JSON object a line (`diag.sinks.logs`, README 'Logs'):
`timestamp`, `level`, `event` and flat keys. Those lines come back from a log store as they
were written (`journalctl -u vfiowatch -o cat`, `kubectl logs ds/...`, an export of Loki or
Elasticsearch as JSON lines), sometimes behind the RFC 3339 stamp `kubectl logs --timestamps`
prints. This importer turns them back into events: the raw events (`--log-events`: binds,
unbinds, sysfs writes with their actor, netdevs, sandboxes, Kata's matched lines) are replayed;
health lines (sources up and down, losses) too; each `finding` line is the agent's own finding,
kept beside the replay's (and shown as the agent logged it when its events were not logged).
Keys the log does not carry (a namespace's inode, a sandbox's shim pid, a process's
ancestry) stay unknown: a finding replayed from the log may lack the pod the agent named.
"""

from __future__ import annotations

import json
import re
import typing
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line, register

_STAMP_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}) (?=\{)")
"""`kubectl logs --timestamps` puts the time of writing before each line."""

AGENT_EVENTS = {"finding", "source_state_changed", "events_lost", "resynced", "decode_failed",
                "agent_started", "agent_stopped", "journal_reopened", "journal_disabled",
                "python_log", "agent_unhealthy", "sighup"}
"""Names only the agent logs (besides raw event kinds): what the sniffer looks for."""

_HEALTH_SOURCE_FIELD = {"source_state_changed": "name", "events_lost": "lost_source",
                        "resynced": "resynced_source", "decode_failed": "failed_source"}
"""Health lines log the source they are about as `source`; the event names it thus."""

_RENAMES = {"netdev": "ifname", "namespace": "pod_namespace", "iommu_group": "group",
            "ebpf_mode": "mode", "message": "text"}
"""Log key -> event field (the log's names are the documented domain keys)."""

_SIMPLE = {str, int, bool, float}


def _object(line: str) -> dict[str, Any] | None:
    text = _STAMP_PREFIX.sub("", line.strip(), count=1)
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _is_agent_line(doc: dict[str, Any] | None) -> bool:
    if doc is None or not {"timestamp", "level", "event"} <= doc.keys():
        return False
    name = doc["event"]
    return isinstance(name, str) and (name in AGENT_EVENTS or name in ev.EVENT_TYPES)


def stamp_ns(text: str) -> int:
    """`2026-11-27T14:53:14.123456Z` -> Unix ns (the log sink writes microseconds, UTC)."""
    whole, _, frac = text.rstrip("Z").partition(".")
    secs = int(datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return secs * 1_000_000_000 + int((frac or "0")[:9].ljust(9, "0"))


def _allowed(tp: Any) -> set[type]:
    """The plain types a field accepts (`str | None` -> {str, NoneType}); empty for nested ones."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, type(int | None)) else (tp,)
    out = set()
    for a in args:
        if a is type(None) or a in _SIMPLE:
            out.add(a)
        elif isinstance(a, type) and issubclass(a, str):  # str enums
            out.add(str)
        else:
            return set()
    return out


def _actor(doc: dict[str, Any]) -> ev.Process | None:
    pid = doc.get("actor_pid")
    if not isinstance(pid, int):
        return None
    return ev.Process(pid=pid, comm=str(doc.get("actor_comm") or ""),
                      exe=str(doc.get("actor_exe") or ""), sandbox_id=doc.get("sandbox_id"),
                      pod=doc.get("pod"), pod_namespace=doc.get("namespace"))


def _netns(doc: dict[str, Any]) -> ev.NetnsRef | None:
    """The namespace a log line names by its label (`host`, a /run/netns name, `pid:N`). The
    log has no inode but for netns_added lines: others get a stable stand-in from the label
    (above 2**40, where no real inode is), so one namespace stays one key."""
    label = doc.get("netns")
    if not isinstance(label, str) or not label:
        return None
    inode = doc.get("netns_inode")
    if not isinstance(inode, int):
        inode = (1 << 40) | zlib.crc32(label.encode())
    pid = int(label[4:]) if label.startswith("pid:") and label[4:].isdigit() else None
    return ev.NetnsRef(inode=inode, is_host=label == "host", pid=pid,
                       name=None if label == "host" or pid is not None else label,
                       sandbox_id=doc.get("sandbox_id"), pod=doc.get("pod"),
                       pod_namespace=doc.get("namespace"))


def _nested(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The fields a log line flattens from nested records, rebuilt."""
    kw: dict[str, Any] = {}
    netns = _netns(doc)
    if netns is not None:
        kw["netns"] = netns
    actor = _actor(doc)
    if actor is not None:
        kw["actor"] = kw["holder"] = actor
    if name == "kata_config_loaded":
        kw["config"] = ev.KataConfig(
            handler=str(doc.get("handler") or "default"), path=doc.get("path"),
            cold_plug_vfio=str(doc.get("cold_plug_vfio") or "no-port"),
            hot_plug_vfio=str(doc.get("hot_plug_vfio") or "no-port"),
            assumed=bool(doc.get("assumed")))
    if name == "sandbox_started" and isinstance(doc.get("vfs"), str):
        kw["vfs"] = tuple(ev.SandboxVf(bdf=b) for b in doc["vfs"].split(",") if b)
    return kw


UNREBUILT = {"inventory_observed", "kata_facts_observed"}
"""Kinds whose log line carries only counts: nothing to replay (their devices come from the
other lines; a Kata handler's facts line says how many VFs pods can be given, not which, so the
exposure verdict it fed is taken as logged)."""


def _finding(doc: dict[str, Any], ts: int) -> ev.Finding:
    fid = str(doc["finding_id"])
    first = fid.rsplit("/", 1)[-1]
    status = str(doc.get("status") or "open")
    return ev.Finding(
        ts_ns=ts, source="core", finding_id=fid, rule=str(doc["rule"]),
        severity=ev.Severity.parse(str(doc["severity"])), summary=str(doc.get("summary") or ""),
        status=status, bdf=doc.get("bdf"), pf=doc.get("pf"), vf_index=doc.get("vf_index"),
        netdev=doc.get("netdev"), netns=doc.get("netns"), sandbox_id=doc.get("sandbox_id"),
        pod=doc.get("pod"), pod_namespace=doc.get("namespace"), actor=_actor(doc),
        first_ns=int(first) if first.isdigit() else ts, last_ns=ts,
        resolved_ns=ts if status == "resolved" else None,
        resolved_reason=str(doc.get("resolved_reason") or ""), remedy=str(doc.get("remedy") or ""),
    )


def event_of(doc: dict[str, Any]) -> ev.Event | None:
    """One agent log line -> its event; None for the agent's own messages (start, stop, ...).

    Raises ValueError (KeyError, TypeError) for a line of a known kind that cannot be rebuilt."""
    name = doc["event"]
    ts = stamp_ns(str(doc["timestamp"]))
    if name == "finding":
        return _finding(doc, ts)
    cls = ev.EVENT_TYPES.get(name)
    if cls is None or cls is ev.Finding or name in UNREBUILT:
        return None
    hints = typing.get_type_hints(cls)
    src_field = _HEALTH_SOURCE_FIELD.get(name)
    kw: dict[str, Any] = {"ts_ns": ts, "source": "runtime" if src_field else str(doc.get("source") or "logs")}
    if src_field:
        src = doc.get("source", "")
        if not isinstance(src, str):  # the source's name keys the model's health table
            raise ValueError(f"{name}: its source is not a name ({type(src).__name__})")
        kw[src_field] = src
    kw.update({k: v for k, v in _nested(name, doc).items() if k in hints and k not in kw})
    for key, value in doc.items():
        if key in ("timestamp", "level", "event", "source"):
            continue
        name_in = _RENAMES.get(key, key)
        if name_in not in hints or name_in in kw:
            continue
        allowed = _allowed(hints[name_in])
        if type(value) in allowed or (value is None and type(None) in allowed):
            kw[name_in] = value
    for f in msgspec.structs.fields(cls):  # the records are msgspec Structs, not dataclasses
        if f.name not in kw and f.required:
            if str in _allowed(hints[f.name]):
                kw[f.name] = ""  # the log leaves out empty values (a bind whose driver was not named)
                continue
            raise ValueError(f"{name}: the log line lacks {f.name!r}")
    return cls(**kw)


class _AgentLogsImporter:
    name = "agent-logs"
    description = "the agent's JSON log lines (journalctl -u vfiowatch -o cat, kubectl logs, Loki/Elasticsearch exports)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:50] if x.strip()]
        return bool(lines) and sum(_is_agent_line(_object(x)) for x in lines) * 2 >= len(lines)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime", ordered=False)
        parsed.events = list(self._events(lines, stats))
        return parsed

    def _events(self, lines: Iterable[bytes], stats: FileStats) -> Iterator[ev.Event]:
        for n, raw in enumerate(lines, 1):
            stats.lines = n
            line = decode_line(raw)
            if not line.strip():
                continue
            doc = _object(line)
            if not _is_agent_line(doc):
                stats.bad(n, "not one of the agent's JSON log lines", raw)
                continue
            assert doc is not None
            try:
                e = event_of(doc)
            except (ValueError, KeyError, TypeError) as exc:
                stats.bad(n, f"cannot rebuild {doc.get('event')!r}: {exc}", raw)
                continue
            if e is not None:
                stats.events += 1
                yield e


register(_AgentLogsImporter())
