"""Provides the importer of Kata sandbox state: Go `persist.json`, runtime-rs `state.json`, bundles.

Decoding and the sandbox's effective settings are the Kata source's (`diag.sources.kata.
kata_decode.decode_persist/decode_state/assemble`): the VFs of its physical endpoints with their
host drivers, the VFIO devices its VMM was given, the QEMU pid, and `cold_plug_vfio` derived
from the Kata configuration given alongside (persist.json does not hold the real value) plus
the pod's annotations. containerd's bundle `config.json` of the sandbox task (its OCI spec)
adds the pod's identity and annotations; a bundle with no state file beside it is a sandbox
whose creation failed (Kata writes its state only once the VM runs), and still gives the
sandbox with its effective `cold_plug_vfio`. One `SandboxStarted` per sandbox, static (placed at
the start).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from diag import events as ev
from diag.importers import FileStats, Parsed, read_whole, register
from diag.sources.kata import decode as kata_decode

_SID = re.compile(r"^[0-9a-zA-Z][0-9a-zA-Z_.-]{5,127}$")
_MARKERS = ('"PersistVersion"', '"HypervisorState"', '"sandbox_type"', '"physical_endpoint"')
_BUNDLE_MARKERS = ('"ociVersion"', "io.kubernetes.cri.")


def sandbox_id(path: str, text: str) -> str:
    """The sandbox id: the state file's directory name (`/run/vc/sbs/<id>/persist.json`)."""
    d = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if _SID.match(d):
        return d
    m = re.search(r'"(?:SandboxContainer|id)"\s*:\s*"([^"]+)"', text)
    return m.group(1) if m else d


def is_bundle(text: str) -> bool:
    return all(m in text for m in _BUNDLE_MARKERS)


def parse_bundle(text: str, path: str, stats: FileStats | None = None) -> kata_decode.BundleInfo | None:
    """containerd's OCI config.json of a task, or None (counted) when it cannot be decoded."""
    got = kata_decode.decode_bundle(text, path)
    if isinstance(got, kata_decode.DecodeError):
        if stats is not None:
            stats.bad(got.line or 1, got.message)
        return None
    return got


def parse_state(
    text: str | None, path: str, cfg: ev.KataConfig | None = None,
    stats: FileStats | None = None, bundle: kata_decode.BundleInfo | None = None,
) -> list[ev.Event]:
    """Events (stamp 0: static) for one persist.json / state.json, or a bundle alone (text None)."""
    st = stats if stats is not None else FileStats(path)
    info: kata_decode.StateInfo | None = None
    if text is not None:
        rs = '"sandbox_type"' in text or ('"resource"' in text and '"PersistVersion"' not in text)
        got = kata_decode.decode_state(text, path) if rs else kata_decode.decode_persist(text, path)
        if isinstance(got, kata_decode.DecodeError):
            st.bad(got.line or 1, got.message)
            return []
        info = got
        sid = sandbox_id(path, text)
    elif bundle is not None:
        sid = bundle.sandbox_id or os.path.basename(os.path.dirname(os.path.abspath(path)))
        st.note("a sandbox bundle with no Kata state file: its creation did not get as far as a "
                "running VM (or the state file was not given)")
    else:
        return []
    assembled = kata_decode.assemble(
        sid, ts_ns=0, state=info, bundle=bundle, shim=None, vmm=None, vm_pid=None,
        handler=cfg.handler if cfg else None, cfg=cfg,
        runtime_hint=info.runtime if info else None,
        netns_inode=None, names={}, host_netns=None,
    )
    if cfg is None:
        st.note("no Kata configuration among the inputs: cold_plug_vfio assumed from Kata's "
                "defaults (give the configuration file too)")
    return [assembled.event, *(e.event(0, "kata") for e in assembled.errors)]


class _KataStateImporter:
    name = "katastate"
    description = "Kata sandbox state (persist.json, state.json)"

    def sniff(self, head: list[str]) -> bool:
        text = "\n".join(head[:400])
        return text.lstrip().startswith("{") and (
            any(m in text for m in _MARKERS) or is_bundle(text))

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        data = read_whole(lines, stats, "a Kata state file")
        if data is None:
            return Parsed(events=[], clock="static")
        stats.lines = data.count(b"\n")
        text = data.decode("utf-8", "replace")
        if is_bundle(text):
            events = parse_state(None, origin, None, stats, parse_bundle(text, origin, stats))
        else:
            events = parse_state(text, origin, None, stats)
        stats.events = len(events)
        return Parsed(events=events, clock="static")


register(_KataStateImporter())
