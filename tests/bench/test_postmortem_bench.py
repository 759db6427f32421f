"""Postmortem replay benchmark: a one-million-event agent journal, beside the floor of parsing its lines.

Each measurement runs in a fresh interpreter (`pm_replay_probe.py`) so its peak RSS is its own:
`floor` is orjson.loads of every line and nothing else (what any JSON Lines reader pays);
`decode` adds diag.codec (events rebuilt); `replay` is the whole `vfiowatch postmortem` engine
(streaming reader, merge, the live Correlator with every built-in rule). The same replay of a
journal ten times smaller shows whether memory stays constant. Prints a table; asserts no time
(target on this machine: replay >= 150,000 events/s), only that every event was read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.benchtable import table

PROBE = Path(__file__).resolve().parent / "pm_replay_probe.py"
N = int(os.environ.get("VFIOWATCH_BENCH_PM_EVENTS", "1000000"))


def _probe(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, str(PROBE), *args], check=True, capture_output=True,
                         text=True, timeout=1800)
    return out.stdout.split()


@pytest.mark.bench
def test_replay_of_a_million_event_journal(tmp_path: Path) -> None:
    """Events/s of floor, decode and full replay on N events, and peak RSS at N/10 vs N."""
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    _probe("make", str(big), str(N))
    _probe("make", str(small), str(N // 10))
    rows = []
    results: dict[str, tuple[int, float, int]] = {}
    for mode, path in (("floor", big), ("decode", big), ("replay", big), ("replay", small)):
        n, secs, rss = _probe(mode, str(path))
        results[f"{mode}:{path.name}"] = (int(n), float(secs), int(rss))
    floor_rate = results["floor:big.jsonl"][0] / results["floor:big.jsonl"][1]
    for key, (n, secs, rss) in results.items():
        mode, name = key.split(":")
        rate = n / secs if secs else float("inf")
        rows.append((mode, f"{n:,}", f"{secs:.2f}", f"{rate:,.0f}", f"{rate / floor_rate:.2f}",
                     f"{rss / 1024:.0f}", f"{(big if name == 'big.jsonl' else small).stat().st_size / 2**20:.0f}"))
    print()
    print(table(
        f"postmortem replay of an agent journal ({N:,} events; target replay >= 150,000 events/s)",
        ("what", "events", "seconds", "events/s", "x floor", "peak RSS MB", "file MB"), rows))
    assert results["replay:big.jsonl"][0] == N + 1  # every event (and the opening inventory)
    assert results["decode:big.jsonl"][0] == N + 1
