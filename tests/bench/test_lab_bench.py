"""Benchmarks in the QEMU SR-IOV lab guest: eBPF kprobe-mode overhead and detection latency."""

from __future__ import annotations

import json
import math
import time

import pytest

from tests.bench.benchtable import table
from tests.lab import labbuild, labvm


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f} ms"


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


@pytest.mark.usefixtures("require_root")
def test_lab_bench_prints_overhead_and_latency_side_by_side() -> None:
    """Boots the bench scenario (one agent serves the overhead rounds and the latency moves)
    and prints its table and the issue's row (no timing is asserted, only that it ran)."""
    t0 = time.monotonic()
    guest = labbuild.build()
    res = labvm.boot(guest, "bench", labbuild.DEFAULT_CACHE / "runs" / "bench", timeout=900)
    assert not res.failure, res.explain()
    assert res.ok, res.console[-3000:] + res.payloads.get("error", b"").decode()
    print()
    print(res.payloads["bench.txt"].decode())
    data = json.loads(res.payloads["bench.json"])
    assert data["overhead_ns"]["no probe"]
    lat, order = data["latency_ms"], data["order"]
    opened = len(lat["opened_final"]) + len(lat["opened_early"])
    print(table(
        f"lab guest (TCG), bind uevent -> critical finding log line, "
        f"{opened + len(lat['missed'])} moves; bench took {time.monotonic() - t0:.0f} s "
        f"(guest {res.seconds:.0f} s, agent ready after {data['ready_s']:.0f} s)",
        ("what", "median", "p99", "opened critical with actor", "then upgraded", "order kept"),
        [("vfiowatch finding line", _ms(_pct(lat["agent_ms"], 0.5)),
          _ms(_pct(lat["agent_ms"], 0.99)), f"{len(lat['opened_final'])}/{opened}",
          f"{len(lat['upgraded'])}/{opened}",
          f"{order['moves_in_order']}/{order['moves_checked']} moves, "
          f"{order['behind']}/{order['records']} records behind"),
         ("  of which in the agent", _ms(_pct(lat.get("inside_ms", []), 0.5)),
          _ms(_pct(lat.get("inside_ms", []), 0.99)), "", "", ""),
         ("udevadm monitor --kernel", _ms(_pct(lat["udevadm_ms"], 0.5)),
          _ms(_pct(lat["udevadm_ms"], 0.99)), "", "", "")]))
