"""Provides `vfiowatch snapshot`: the PCI devices that matter for VF passthrough, table or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from diag import __version__
from diag.commands import Command, register
from diag.common.paths import HostPaths
from diag.common.text import safe

SNAPSHOT_SCHEMA = 1


def _owners(paths: HostPaths, devices: list[Any]) -> dict[str, Any]:
    """PCI address -> the Kata sandbox using it (its VFs, QEMU's vfio-pci devices and groups)."""
    from diag.commands import kataview

    return kataview.read(paths, devices).by_device()


def _owner_fields(owner: Any) -> dict[str, str | None]:
    e = owner.event if owner is not None else None
    return {"sandbox_id": e.sandbox_id if e else None, "pod": e.pod if e else None,
            "namespace": e.pod_namespace if e else None}


def snapshot_json(paths: HostPaths) -> dict[str, Any]:
    """The inventory as JSON; the schema lists every field, defaults included, so consumers
    need no defaults. Each device carries the Kata sandbox, pod and namespace using it."""
    from diag.sources import sysfs

    devices = sysfs.scan(paths)
    owners = _owners(paths, devices)
    return {
        "schema": SNAPSHOT_SCHEMA,
        "kind": "vfiowatch_snapshot",
        "agent_version": __version__,
        "root": str(paths.root),
        "devices": [{**asdict(d), **_owner_fields(owners.get(d.bdf))} for d in devices],
        "refused": paths.refusals.all(),
    }


def snapshot_table(paths: HostPaths, color: bool) -> str:
    """The inventory as a table: VFs nested under their PF, vfio-pci highlighted."""
    from diag.sources import sysfs

    devices = sysfs.scan(paths)
    owners = _owners(paths, devices)
    rows = []
    header = ("BDF", "ID", "CLASS", "DRIVER", "OVERRIDE", "GROUP", "NUMA", "SR-IOV", "NETDEV", "VFIO",
              "SANDBOX", "POD")
    for d, depth in sysfs.pf_vf_order(devices):
        owner = _owner_fields(owners.get(d.bdf))
        if d.role == "pf":
            sriov = f"PF {d.sriov_numvfs}/{d.sriov_totalvfs} VFs"
        elif d.role == "vf":
            sriov = f"VF {d.vf_index if d.vf_index is not None else '?'} of {d.pf}"
        else:
            sriov = "-"
        rows.append((
            ("  └ " if depth else "") + d.bdf,
            f"{d.vendor}:{d.device}",
            d.class_code,
            d.driver or "(none)",
            d.driver_override or "-",
            "-" if d.iommu_group is None else str(d.iommu_group),
            "-" if d.numa_node is None else str(d.numa_node),
            sriov,
            ",".join(d.netdevs) or "-",
            d.vfio_group_path or "-",
            (owner["sandbox_id"] or "-")[:12],
            f"{owner['namespace'] or '?'}/{owner['pod']}" if owner["pod"] else "-",
            d,
        ))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(safe(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for r in rows:
        cells = [safe(str(c)).ljust(w) for c, w in zip(r[:-1], widths, strict=True)]
        d = r[-1]
        line = "  ".join(cells).rstrip()
        if color and d.driver == "vfio-pci":
            line = f"\x1b[1;33m{line}\x1b[0m"
        lines.append(line)
        if d.errors:
            lines.append("      ! " + safe("; ".join(d.errors)))
    n_vfio = sum(1 for r in rows if r[-1].driver == "vfio-pci")
    lines.append(f"{len(rows)} PCI devices, {n_vfio} on vfio-pci")
    refused = paths.refusals.all()
    if refused:
        lines.append(f"{len(refused)} paths refused: they lead outside --root {safe(str(paths.root))}")
        lines.extend(f"  ! {safe(r)}" for r in refused)
    return "\n".join(lines)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table for people (vfio-pci highlighted), json for machines "
                        "(stable schema, see README 'Snapshot JSON')")


def _run(args: argparse.Namespace) -> int:
    paths = HostPaths.at(args.root)
    if args.format == "json":
        json.dump(snapshot_json(paths), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(snapshot_table(paths, color))
    return 0


register(Command(
    name="snapshot",
    help="list the PCI devices that matter for VF passthrough",
    description=(
        "List every PCI device with its id and class, bound driver, driver_override, IOMMU "
        "group, NUMA node, SR-IOV role (PF with its VFs nested, VF with its PF and index), "
        "network interfaces, on vfio-pci its /dev/vfio group, and the Kata sandbox, pod and "
        "namespace using it. Reads sysfs, Kata's state files and /proc; changes nothing."
    ),
    arguments=_arguments,
    run=_run,
))
