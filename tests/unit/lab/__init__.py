"""Unit tests of the lab's own tooling (no QEMU)."""
