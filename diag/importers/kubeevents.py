"""Provides the importer of `kubectl get events -o json` and `-o yaml` (an Event, an EventList or a List of them).

`FailedCreatePodSandBox` (and kubevirt's `SyncFailed`) messages carry Kata's, QEMU's and
libvirt's errors; each event's message is matched with the signature catalogue at its
`lastTimestamp` (else `eventTime`, `firstTimestamp`, its creation time), and its
`involvedObject` names the pod. The document is read whole, bounded in size; YAML anchors and
aliases (which kubectl never prints, and which can make a small file huge) are refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from diag import events as ev
from diag.importers import FileStats, Parsed, register
from diag.importers.textlog import Emitter, bounded_lines
from diag.sources.kata import loglines

MAX_BYTES = 32 * 1024 * 1024
_ANCHOR = re.compile(r"(?:^|[\s\[{,:-])[&*][\w-]+", re.M)
_YAML_KIND = re.compile(r"^\s*-?\s*kind:\s*(Event|EventList|List)\s*$", re.M)


def load(text: str) -> object:
    """The document (JSON or YAML); raises ValueError when it is neither or unsafe."""
    s = text.strip()
    if s.startswith(("{", "[")):
        dec, docs, pos = json.JSONDecoder(), [], 0
        while pos < len(s):  # one object, or several printed one after another
            doc, end = dec.raw_decode(s, pos)
            docs.append(doc)
            pos = end
            while pos < len(s) and s[pos].isspace():
                pos += 1
        return docs[0] if len(docs) == 1 else docs
    if _ANCHOR.search(text):
        raise ValueError("YAML anchors or aliases: not kubectl output (refused)")
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]  # `---`-separated objects
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {str(exc).splitlines()[0]}") from None
    return docs[0] if len(docs) == 1 else docs


def items(doc: object) -> list[dict[str, Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        return [x for x in doc["items"] if isinstance(x, dict)]
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        return [x for x in doc if isinstance(x, dict)]
    return []


def _stamp(item: dict[str, Any]) -> int | None:
    meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    for v in (item.get("lastTimestamp"), item.get("eventTime"), item.get("firstTimestamp"),
              meta.get("creationTimestamp") if isinstance(meta, dict) else None):
        if isinstance(v, str) and v:
            ts = loglines.parse_time_ns(v)
            if ts is not None:
                return ts
    return None


def parse_kube_events(text: str, stats: FileStats | None = None,
                      parsed: Parsed | None = None) -> Iterator[ev.Event]:
    st = stats if stats is not None else FileStats("<events>")
    out = parsed if parsed is not None else Parsed(events=(), clock="realtime", ordered=False)
    try:
        doc = load(text)
    except ValueError as exc:
        st.bad(1, str(exc))
        return
    emit = Emitter(st, out)
    rows = sorted(((_stamp(i), n, i) for n, i in enumerate(items(doc))),
                  key=lambda r: (r[0] is None, r[0] or 0, r[1]))
    pods: set[str] = set()
    for ts, _, item in rows:
        msg = item.get("message")
        if not isinstance(msg, str):
            continue
        obj = item.get("involvedObject") if isinstance(item.get("involvedObject"), dict) else {}
        if isinstance(obj, dict) and obj.get("name"):
            pods.add(f"{obj.get('kind', '?')} {obj.get('namespace', '?')}/{obj['name']}")
        rec = loglines.LogRecord(message=msg, level="error" if item.get("type") == "Warning" else "info",
                             fields={"reason": str(item.get("reason", ""))}, ts_ns=ts,
                             origin=f"kubectl-events:{item.get('reason', '')}", line_ts=ts is not None)
        yield from emit.emit(rec, ts)
    if pods:
        st.note("events of " + ", ".join(sorted(pods)[:8]))
    yield from emit.finish("event")


class _KubeEventsImporter:
    name = "kubectl-events"
    description = "kubectl get events -o json / -o yaml"

    def sniff(self, head: list[str]) -> bool:
        text = "\n".join(head[:300])
        if '"involvedObject"' in text and ('"kind": "Event' in text or '"reason"' in text):
            return True
        return bool(_YAML_KIND.search(text)) and "involvedObject:" in text and "reason:" in text

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        text = "\n".join(bounded_lines(lines, stats, MAX_BYTES))
        stats.lines = text.count("\n") + 1
        parsed = Parsed(events=(), clock="realtime", ordered=False)
        parsed.events = parse_kube_events(text, stats, parsed)
        return parsed


register(_KubeEventsImporter())
