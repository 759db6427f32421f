"""Provides the importer of Kata's version as operators paste it: kata-env, `--version` outputs, package lists.

Recognised (real samples in tests/fixtures/kata-version): `kata-runtime kata-env` (TOML, or
`--json`), `kata-runtime --version`, `containerd-shim-kata-v2 --version`, and `dpkg -l` /
`rpm -qa` listings naming Kata's runtime package. The decoders are the Kata source's
(`diag.sources.kata.version`); one file gives one static KataFactsObserved (handler `kata`,
with the configuration kata-env shows, if any). The postmortem engine completes it with the
configuration files and the inventory given beside it (`diag.postmortem.inputs`), and the
replay judges the exposure (rule `kata-vfio-exposure`).

A `kata-collect-data.sh` report (which embeds kata-env) is not claimed here: its importer reads
its journal lines, and the postmortem engine calls `facts_event` on it for the same facts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from diag import events as ev
from diag.importers import FileStats, Parsed, register
from diag.sources.kata import version as kversion

SOURCE = "kata"
NAME = "kataversion"
MAX_BYTES = 4 << 20
COLLECT_MARKERS = re.compile(r"kata-collect-data\.sh|^#\s+`kata-env`|Recent\s+(?:runtime\s+|shim\s+)?problems "
                             r"found in system journal")
_ENV_TOML = re.compile(r"^\s*\[Runtime\.Version(?:\.Version)?\]\s*$")
"""A table only kata-env writes (its `[Meta]` and `[Hypervisor]` are too common alone)."""
_RUNTIME_VERSION = re.compile(r"^\s*kata-runtime\s*:\s*v?\d+\.\d+")
_SHIM_VERSION = re.compile(r"Kata Containers containerd shim(?: \((?:Golang|Rust)\))?: id: ")


def facts_event(text: str, origin: str, *, handler: str = "kata") -> ev.KataFactsObserved | None:
    """The facts a pasted text gives (kata-env, a collect-data report, `--version`, package
    listings), as a static event; None when it names no Kata version and no configuration."""
    facts = kversion.facts_from_report(text, handler=handler, origin=origin)
    return None if facts is None else ev.KataFactsObserved(ts_ns=0, source=SOURCE, facts=facts)


class _KataVersionImporter:
    name = NAME
    description = "Kata's version: kata-env (TOML/JSON), kata-runtime/shim --version, dpkg -l/rpm -qa"

    def sniff(self, head: list[str]) -> bool:
        if any(COLLECT_MARKERS.search(x) for x in head[:400]):
            return False
        if any(_RUNTIME_VERSION.match(x) or _SHIM_VERSION.search(x) for x in head[:200]):
            return True
        if any(_ENV_TOML.match(x) for x in head[:400]):
            return True
        text = "\n".join(head)
        if text.lstrip().startswith("{") and '"Runtime"' in text and ('"Meta"' in text or '"Hypervisor"' in text):
            return kversion.parse_kata_env(text) is not None
        return bool(kversion.parse_package_listing("\n".join(head[:2000])))

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        buf = bytearray()
        for line in lines:
            stats.lines += 1
            if len(buf) < MAX_BYTES:
                buf += line
        if len(buf) >= MAX_BYTES:
            stats.truncated = True
            stats.note(f"read the first {MAX_BYTES >> 20} MiB only")
        e = facts_event(bytes(buf).decode("utf-8", "replace"), origin)
        if e is None:
            stats.note("names no Kata version")
            return Parsed(events=[], clock="static")
        f = e.facts
        stats.events = 1
        stats.note(f"Kata {f.version or 'version unknown'}"
                   + (f" ({f.version_source.detail})" if f.version_source else ""))
        return Parsed(events=[e], clock="static")


register(_KataVersionImporter())
