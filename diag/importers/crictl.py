"""Provides the importer of `crictl` output: `crictl pods`/`crictl ps` tables and `crictl inspectp` (table or JSON).

They tie a sandbox id (the one Kata's lines and QEMU's `-name sandbox-<id>` carry, or its
13-character prefix) to its pod; the report lists each pair, and a finding about a sandbox one
of them names carries its pod (`Parsed.pods`). No event: a listing says which pods exist, not
what a VF did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from diag.importers import FileStats, Parsed, register
from diag.importers.textlog import bounded_lines

PODS_HEADER = re.compile(r"^\s*POD ID\s+CREATED\s+STATE\s+NAME\s+NAMESPACE\b")
PS_HEADER = re.compile(r"^\s*CONTAINER(?: ID)?\s+IMAGE\s+CREATED\s+STATE\s+NAME\b")
POD_ROW = re.compile(r"^(?P<id>[0-9a-f]{12,64})\s+.+?\s{2,}(?P<state>Ready|NotReady)\s+"
                     r"(?P<name>\S+)\s+(?P<ns>\S+)")
FIELD = re.compile(r"^(ID|Name|Namespace|Status):\s+(\S+)\s*$")


def pods(text: str) -> dict[str, tuple[str, str, str]]:
    """Sandbox id (or prefix) -> (namespace, name, state)."""
    out: dict[str, tuple[str, str, str]] = {}
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError:
            doc = None
        status = doc.get("status") if isinstance(doc, dict) else None
        if isinstance(status, dict) and isinstance(status.get("metadata"), dict):
            md = status["metadata"]
            out[str(status.get("id", ""))] = (str(md.get("namespace", "")),
                                             str(md.get("name", "")), str(status.get("state", "")))
        return out
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = POD_ROW.match(line)
        if m is not None:
            out[m.group("id")] = (m.group("ns"), m.group("name"), m.group("state"))
            continue
        f = FIELD.match(line)
        if f is not None:
            fields.setdefault(f.group(1), f.group(2))
    if "ID" in fields and "Name" in fields:
        out[fields["ID"]] = (fields.get("Namespace", ""), fields["Name"], fields.get("Status", ""))
    return out


class _CrictlImporter:
    name = "crictl"
    description = "crictl pods / ps / inspectp output (sandbox id <-> pod)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:100] if x.strip()]
        if any(PODS_HEADER.match(x) or PS_HEADER.match(x) for x in lines):
            return True
        text = "\n".join(lines)
        if "crictl inspectp" in text or ('"status"' in text and '"metadata"' in text
                                         and '"SANDBOX_' in text):
            return True
        return sum(bool(FIELD.match(x)) for x in lines) >= 3 and "SANDBOX_" in text

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        text = "\n".join(bounded_lines(lines, stats))
        stats.lines = text.count("\n") + 1
        parsed = Parsed(events=[], clock="static")
        for sid, (ns, name, state) in sorted(pods(text).items()):
            stats.note(f"sandbox {sid[:13]} is pod {ns}/{name}" + (f" ({state})" if state else ""))
            parsed.pods[sid] = (ns, name)
        return parsed


register(_CrictlImporter())
