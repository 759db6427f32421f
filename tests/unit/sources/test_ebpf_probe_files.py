"""The probe files ship with the package and say what they are, and user space knows their programs."""

from __future__ import annotations

import re

import pytest

from diag.sources.ebpf.mode import KPROBE_HANDLERS
from diag.sources.ebpf.source import (
    KPROBE_PROBE,
    OPEN_ONLY_PROBE,
    TRACEPOINT_PROBE,
    probes_dir,
)

SECTIONS = ("Purpose", "Hooks", "Fallbacks", "Kernel", "Overhead")


@pytest.mark.parametrize("name", [TRACEPOINT_PROBE, OPEN_ONLY_PROBE, KPROBE_PROBE])
def test_each_probe_opens_with_purpose_hooks_fallbacks_kernel_overhead(name: str) -> None:
    """The opening comment of each probe has the five sections DESIGN.md asks for."""
    text = (probes_dir() / name).read_text()
    head = text[: text.index("*/")]
    for s in SECTIONS:
        assert re.search(rf"^ \* {s}\b", head, re.M), f"{name}: no '{s}' section"


def test_every_kprobe_handler_has_its_program() -> None:
    """Each handler user space attaches has an entry program of that name in the kprobe probe."""
    text = (probes_dir() / KPROBE_PROBE).read_text()
    defined = set(re.findall(r"^(?:DRV|BUS|DEV)_ENTRY\((kp_\w+),", text, re.M))
    assert set(KPROBE_HANDLERS.values()) == defined
    assert "int kr_store(struct pt_regs *ctx)" in text


def test_probes_dir_holds_the_shared_header() -> None:
    """probes_dir() (wheel or checkout) holds every program and the shared headers."""
    d = probes_dir()
    assert {TRACEPOINT_PROBE, OPEN_ONLY_PROBE, KPROBE_PROBE, "vfiowatch.h", "vfw_classify.h"} <= {
        p.name for p in d.iterdir()}


def test_only_the_facade_imports_bcc() -> None:
    """bcc is imported by diag/sources/ebpf/bcc_facade.py and by no other module of diag."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "diag"
    importers = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "bcc" or n.startswith("bcc.") for n in names):
                importers.append(str(path.relative_to(root.parent)))
    assert sorted(set(importers)) == ["diag/sources/ebpf/bcc_facade.py"]
