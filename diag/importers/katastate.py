"""Provides the importer of Kata sandbox state files: Go `persist.json`, runtime-rs `state.json`.

Decoding and the sandbox's effective settings are the Kata source's (`diag.sources.kata.
sandboxes.decode_persist/decode_state/assemble`): the VFs of its physical endpoints with their
host drivers, the VFIO devices its VMM was given, the QEMU pid, and `cold_plug_vfio` derived
from the Kata configuration given alongside (persist.json does not hold the real value) plus
the pod's annotations. One `SandboxStarted` per file, static (placed at the start).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from diag import events as ev
from diag.importers import FileStats, Parsed, register
from diag.sources.kata import sandboxes

_SID = re.compile(r"^[0-9a-zA-Z][0-9a-zA-Z_.-]{5,127}$")
_MARKERS = ('"PersistVersion"', '"HypervisorState"', '"sandbox_type"', '"physical_endpoint"')


def sandbox_id(path: str, text: str) -> str:
    """The sandbox id: the state file's directory name (`/run/vc/sbs/<id>/persist.json`)."""
    d = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if _SID.match(d):
        return d
    m = re.search(r'"(?:SandboxContainer|id)"\s*:\s*"([^"]+)"', text)
    return m.group(1) if m else d


def parse_state(
    text: str, path: str, cfg: ev.KataConfig | None = None, stats: FileStats | None = None,
) -> list[ev.Event]:
    """Events (stamp 0: static) for one persist.json / state.json."""
    st = stats if stats is not None else FileStats(path)
    rs = '"sandbox_type"' in text or ('"resource"' in text and '"PersistVersion"' not in text)
    info = sandboxes.decode_state(text, path) if rs else sandboxes.decode_persist(text, path)
    if isinstance(info, sandboxes.DecodeError):
        st.bad(getattr(info, "line", None) or 1, info.message)
        return []
    sid = sandbox_id(path, text)
    got = sandboxes.assemble(
        sid, ts_ns=0, state=info, bundle=None, shim=None, vmm=None, vm_pid=None,
        handler=cfg.handler if cfg else None, cfg=cfg, runtime_hint=info.runtime,
        netns_inode=None, names={}, host_netns=None,
    )
    if cfg is None:
        st.note("no Kata configuration among the inputs: cold_plug_vfio assumed from Kata's "
                "defaults (give the configuration file too)")
    return [got.event, *(e.event(0, "kata") for e in got.errors)]


class _KataStateImporter:
    name = "katastate"
    description = "Kata sandbox state (persist.json, state.json)"

    def sniff(self, head: list[str]) -> bool:
        text = "\n".join(head[:200])
        return text.lstrip().startswith("{") and any(m in text for m in _MARKERS)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        data = b"".join(lines)
        stats.lines = data.count(b"\n")
        events = parse_state(data.decode("utf-8", "replace"), origin, None, stats)
        stats.events = len(events)
        return Parsed(events=events, clock="static")


register(_KataStateImporter())
