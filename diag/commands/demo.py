"""Provides `vfiowatch demo`: the bundled incident journal played in the dashboard."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from diag.commands import Command, register
from diag.commands.tui import add_replay_arguments, replay
from diag.common.errors import DiagError

DEMO_JOURNAL = "demo.jsonl"
"""Bundled incident journal in diag/data/ (see diag/data/README.md for how it was made)."""


def demo_journal_path() -> Path:
    return Path(str(resources.files("diag") / "data" / DEMO_JOURNAL))


def _arguments(p: argparse.ArgumentParser) -> None:
    add_replay_arguments(p, 1.0)


def _run(args: argparse.Namespace) -> int:
    path = demo_journal_path()
    if not path.exists():
        raise DiagError(f"the bundled demo journal is missing ({path})",
                        hint="reinstall vfiowatch; the wheel ships diag/data/demo.jsonl")
    # The incident (the VF on vfio-pci) lasts 9.5 s in the journal: keep that pause whole.
    return replay(path, args, mode="DEMO", max_gap_s=10.0)


register(Command(
    name="demo",
    help="play the bundled incident journal in the dashboard (no SR-IOV hardware needed)",
    description=(
        "Replays a Kata-style VF move to vfio-pci with cold_plug_vfio disabled, recorded "
        "from real igb/igbvf/vfio-pci drivers in the QEMU lab, through the dashboard."
    ),
    arguments=_arguments,
    run=_run,
))
