"""Benchmarks in the QEMU SR-IOV lab guest: eBPF kprobe-mode overhead and detection latency."""

from __future__ import annotations

import json

import pytest

from tests.lab import labbuild, labvm


@pytest.mark.usefixtures("require_root")
def test_lab_bench_prints_overhead_and_latency_side_by_side() -> None:
    """Boots the bench scenario and prints its table (no timing is asserted, only that it ran)."""
    guest = labbuild.build()
    res = labvm.boot(guest, "bench", labbuild.DEFAULT_CACHE / "runs" / "bench", timeout=900)
    assert not res.failure, res.explain()
    assert res.ok, res.console[-3000:] + res.payloads.get("error", b"").decode()
    print()
    print(res.payloads["bench.txt"].decode())
    data = json.loads(res.payloads["bench.json"])
    assert data["overhead_ns"]["no probe"]
