"""Provides the importer of a `kata-collect-data.sh` report (the Markdown Kata's issue template asks for).

The report holds `kata-env`, the configuration, and the journal's recent problems of the
runtime, the shim and containerd in fenced blocks. Every line is decoded as the Kata source
decodes a log line (logfmt with its `time=`, else plain text) and matched with the catalogue,
like the `text` importer; the report's version line is noted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from diag.importers import FileStats, Parsed, register
from diag.importers.text import parse_text
from diag.importers.textlog import bounded_lines

MARKERS = re.compile(r"kata-collect-data\.sh|Recent\s+(?:runtime\s+|shim\s+)?problems found in "
                     r"system journal|^# Logfiles\b|^#\s+`kata-env`")
VERSION = re.compile(r"Running `kata-collect-data\.sh` version `([^`]{1,80})`")


class _CollectImporter:
    name = "kata-collect-data"
    description = "kata-collect-data.sh report (Markdown): its journal sections and errors"

    def sniff(self, head: list[str]) -> bool:
        return any(MARKERS.search(x) for x in head[:200])

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime", ordered=False)

        def noted(src: Iterable[str]) -> Iterable[str]:
            for line in src:
                v = VERSION.search(line)
                if v is not None:
                    stats.note(f"kata-collect-data.sh {v.group(1)}")
                yield line

        parsed.events = parse_text(noted(bounded_lines(lines, stats)), stats, parsed)
        return parsed


register(_CollectImporter())
