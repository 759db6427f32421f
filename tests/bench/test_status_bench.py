"""Benchmark: `vfiowatch status` on a full 64 MB journal part, beside what else would answer it (printed, never asserted).

The journal is the demo's recording with its device, link, sandbox and write records repeated
to the agent's default rotation size (64 MiB), its finding records at the end. Rows, medians of a few runs:
* `read_state` in-process: the records status needs, sniffed by their kind prefix, decoded;
* `vfiowatch status` as a process, what an operator runs (interpreter start included), and
  the same on the 3 KB demo journal: its start-up alone;
* every line decoded (json.loads), what a script reading the journal naively does;
* `grep -c '"kind":"finding"'`, the floor of reading the file at all;
* `jq` selecting the findings, when jq is installed (the project does not install it).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from diag.commands import agentstate as ag
from tests.bench.benchtable import table
from tests.conftest import REPO, vfiowatch_bin

DEMO = REPO / "diag" / "data" / "demo.jsonl"
SIZE = 64 * 1024 * 1024


def journal(tmp: Path) -> Path:
    lines = DEMO.read_bytes().splitlines(keepends=True)
    head = b"".join(x for x in lines[:12])
    findings = b"".join(x for x in lines if x.startswith(b'{"kind":"finding"'))
    # The bulk of a real part: device, link, sandbox and write records (health lines are rare).
    body = b"".join(x for x in lines[12:] if not x.startswith(
        (b'{"kind":"finding"', b'{"kind":"header"', b'{"kind":"source_state_changed"')))
    path = tmp / "journal.jsonl"
    with path.open("wb") as fh:
        fh.write(head)
        n = len(head)
        while n < SIZE:
            fh.write(body)
            n += len(body)
        fh.write(findings)
    return path


def median_s(fn: Callable[[], object], runs: int = 5) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def test_status_reads_a_full_part_beside_grep_and_a_naive_decode(tmp_path: Path) -> None:
    """Prints the table; checks only that status found the recording's critical finding."""
    path = journal(tmp_path)
    st = ag.read_state(path)
    assert "vfio-bind-coldplug-disabled" in [f.rule for f in st.findings.values()]
    lines = sum(1 for _ in path.open("rb"))

    def naive() -> None:
        with path.open("rb") as fh:
            for line in fh:
                json.loads(line)

    cases = [
        ("read_state (in-process)", lambda: ag.read_state(path)),
        ("vfiowatch status (a process)", lambda: subprocess.run(
            [vfiowatch_bin(), "status", "--journal", str(path)], capture_output=True, check=False)),
        ("vfiowatch status on the 3 KB demo journal (start-up alone)", lambda: subprocess.run(
            [vfiowatch_bin(), "status", "--journal", str(DEMO)], capture_output=True, check=False)),
        ("json.loads of every line", naive),
        ("grep -c '\"kind\":\"finding\"'", lambda: subprocess.run(
            ["grep", "-c", '"kind":"finding"', str(path)], capture_output=True, check=False)),
    ]
    if shutil.which("jq"):
        cases.append(("jq 'select(.kind==\"finding\")'", lambda: subprocess.run(
            ["jq", "-c", 'select(.kind=="finding")', str(path)], capture_output=True, check=False)))
    times = [(name, median_s(fn)) for name, fn in cases]
    base = times[0][1]
    rows = [(name, f"{s * 1e3:.0f} ms", f"{s / base:.2f}") for name, s in times]
    print()
    print(table(f"status on a {path.stat().st_size / 2**20:.0f} MiB journal part ({lines:,} lines)",
                ("reader", "median", "x read_state"), rows))
