"""The test suite: tiers by directory (unit, golden, tui, kernel, ebpf, lab, bench)."""
