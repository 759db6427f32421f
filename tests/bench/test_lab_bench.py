"""Benchmarks in the QEMU SR-IOV lab guest: eBPF kprobe-mode overhead and detection latency."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

import labbuild
import labvm


def test_lab_bench_prints_overhead_and_latency_side_by_side() -> None:
    """Boots the bench scenario and prints its table (no timing is asserted, only that it ran)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    guest = labbuild.build()
    res = labvm.boot(guest, "bench", labbuild.DEFAULT_CACHE / "runs" / "bench", timeout=900)
    assert not res.failure, res.explain()
    assert res.ok, res.console[-3000:] + res.payloads.get("error", b"").decode()
    print()
    print(res.payloads["bench.txt"].decode())
    data = json.loads(res.payloads["bench.json"])
    assert data["overhead_ns"]["no probe"]
