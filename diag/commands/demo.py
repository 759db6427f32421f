"""Provides `vfiowatch demo`: the bundled incident journal played in the dashboard as a story.

The journal (diag/data/demo.jsonl, recorded by the agent in the QEMU lab) holds Kata issue
#10162 as an operator lives it. `chapters()` finds its turning points in the recorded events
(the pod's sandbox, the move to vfio-pci, QEMU's refusal, the rollback, the pod's failure) and
says each in a line; the replay holds at each for a few seconds with its caption on screen, so
the demo reads as a guided story and ends on what to do, with the host back to normal.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from diag import events as ev
from diag.commands import Command, register
from diag.commands.tui import add_replay_arguments, replay
from diag.common.errors import DiagError

DEMO_JOURNAL = "demo.jsonl"
"""Bundled incident journal in diag/data/ (see diag/data/README.md for how it was made)."""
SETTLE_NS = 150_000_000
"""A chapter holds after the records within this much of its turning point (late eBPF records
and the log lines about the same step arrive a little after it)."""


@dataclass(frozen=True, slots=True)
class Chapter:
    """A turning point of the story: hold after `position` records, saying `caption`."""

    position: int
    caption: str


def demo_journal_path() -> Path:
    return Path(str(resources.files("diag") / "data" / DEMO_JOURNAL))


def _settled(events: Sequence[ev.Event], i: int) -> int:
    """The position after record `i` and what arrives about the same moment."""
    t = events[i].ts_ns
    pos = i + 1
    while pos < len(events) and events[pos].ts_ns <= t + SETTLE_NS:
        pos += 1
    return pos


def chapters(events: Sequence[ev.Event]) -> list[Chapter]:
    """The #10162 story's turning points in a recorded journal, each with its caption; the
    turning points a journal does not hold are left out."""
    out: list[Chapter] = []
    sb: ev.SandboxStarted | None = None
    vf: str | None = None
    netdev = ""
    prev_driver = ""
    seen: set[str] = set()

    def add(i: int, text: str) -> None:
        out.append(Chapter(_settled(events, i), text))

    for i, e in enumerate(events):
        if isinstance(e, ev.InventoryObserved) and "inventory" not in seen:
            seen.add("inventory")
            vfs = sum(1 for d in e.devices if d.role == "vf")
            add(i, f"A Kata host with an SR-IOV NIC ({vfs} VFs). vfiowatch follows the kernel's "
                   "uevents, every network namespace, eBPF on the sysfs driver files, and Kata's "
                   "configuration and logs.")
        elif isinstance(e, ev.SandboxStarted) and sb is None:
            sb = e
            pod = f"{e.pod_namespace}/{e.pod}" if e.pod else "a pod"
            add(i, f"Pod {pod} starts: Kata sandbox {e.sandbox_id[:12]}, and Kata's "
                   f"cold_plug_vfio is {e.cold_plug_vfio or 'no-port'} (its default: cold plug "
                   "disabled).")
        elif isinstance(e, ev.NetdevRemoved) and not netdev:
            netdev = e.ifname
        elif isinstance(e, ev.DeviceUnbound) and e.previous_driver and not prev_driver:
            prev_driver = e.previous_driver
        elif (isinstance(e, ev.DeviceBound) and e.driver == "vfio-pci" and not e.synthetic
              and vf is None):
            vf = e.bdf
            mine = [w for w in events if isinstance(w, ev.SysfsWriteObserved) and w.bdf == vf
                    and w.ts_ns <= e.ts_ns + SETTLE_NS]
            who = (f"{mine[0].actor.comm}[{mine[0].actor.pid}]" if mine else "a process")
            how = ", ".join(dict.fromkeys(w.control for w in mine)) or "writes not seen"
            lost = f"; its netdev {netdev} is gone" if netdev else ""
            add(i, f"The Kata shim {who} moves VF {vf} from {e.previous_driver or prev_driver or 'its driver'} "
                   f"to vfio-pci ({how}){lost}. With cold plug disabled this is Kata #10162: "
                   "a critical finding opens, naming the shim and the pod.")
        elif isinstance(e, ev.LogLineMatched) and e.signature == "qemu-bus-not-found" \
                and "qemu" not in seen:
            seen.add("qemu")
            add(i, "QEMU refuses the VF: Bus '<unknown PCIePortBusPrefix: >0' not found. The VM "
                   "does not start; the finding now says QEMU failed as predicted.")
        elif isinstance(e, ev.DeviceBound) and vf is not None and e.bdf == vf \
                and e.driver != "vfio-pci" and "back" not in seen:
            seen.add("back")
            add(i, f"Kata rolls the network back: {vf} returns to {e.driver} with a new netdev "
                   "(new ifindex, new MAC). The finding is resolved; the pod has no network.")
        elif isinstance(e, ev.LogLineMatched) and "RunPodSandbox" in e.text and "pod" not in seen:
            seen.add("pod")
            add(i, "The pod fails: containerd reports RunPodSandbox failed. kubelet retries, and "
                   "every retry moves the VF again.")
    if vf is not None:
        out.append(Chapter(len(events), (
            "What to do: set cold_plug_vfio = \"root-port\" with pcie_root_port >= 1 for this "
            "handler (or run Kata Go >= 3.9, which refuses such pods before touching the VF). "
            "End of the story: q quits, < plays it again.")))
    total = len(out)
    return [Chapter(c.position, f"{k}/{total}  {c.caption}") for k, c in enumerate(out, 1)]


def _arguments(p: argparse.ArgumentParser) -> None:
    add_replay_arguments(p, 1.0)
    p.add_argument("--hold", type=float, default=6.0, metavar="SECONDS",
                   help="how long the story holds at each turning point (default 6; space "
                        "goes on at once; 0 plays straight through)")


def _run(args: argparse.Namespace) -> int:
    path = demo_journal_path()
    if not path.exists():
        raise DiagError(f"the bundled demo journal is missing ({path})",
                        hint="reinstall vfiowatch; the wheel ships diag/data/demo.jsonl")
    return replay(path, args, mode="DEMO", max_gap_s=2.0, guide=chapters,
                  hold_s=max(0.0, getattr(args, "hold", 6.0)))


register(Command(
    name="demo",
    help="play the bundled incident (Kata #10162) in the dashboard as a guided story",
    description=(
        "Replays Kata issue #10162 as recorded by the agent in the QEMU lab from real "
        "igb/igbvf/vfio-pci drivers: a pod's Kata shim moves its VF to vfio-pci while "
        "cold_plug_vfio is disabled, QEMU refuses the VF, Kata rolls back, the pod fails. "
        "The replay holds at each turning point with a caption, and ends on what to do."
    ),
    arguments=_arguments,
    run=_run,
))
