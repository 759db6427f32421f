"""Provides `vfiowatch snapshot`: the PCI devices that matter for VF passthrough and each Kata
handler's exposure to the known Kata VFIO bugs, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import msgspec

from diag import __version__
from diag.commands import Command, refused_lines, register
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


def _exposure(paths: HostPaths) -> Any:
    from diag.sources.kata.source import exposure_now

    return exposure_now(paths)


def _every_field(obj: Any) -> Any:
    """A record as plain JSON values, every field present (the wire leaves defaults out; a
    snapshot's consumers get them all)."""
    if isinstance(obj, msgspec.Struct):
        return {name: _every_field(getattr(obj, name)) for name in obj.__struct_fields__}
    if isinstance(obj, (tuple, list)):
        return [_every_field(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _every_field(v) for k, v in obj.items()}
    return msgspec.to_builtins(obj)


def kata_json(he: Any) -> list[dict[str, Any]]:
    """Each Kata handler: its facts and the known issues it is (or would be) exposed to (none
    when no Kata is installed)."""
    if he is None:
        return []
    out = []
    for f, a in zip(he.facts, he.assessments, strict=True):
        if f.assumed:
            continue  # no Kata installed: an empty list
        out.append({
            "handler": f.handler,
            "facts": _every_field(f),
            "exposure": [
                {"issue": r.issue, "severity": r.severity.label, "exposed": r.exposed,
                 "title": r.title, "why": list(r.why), "first_pod": r.first_pod, "fix": r.fix,
                 "dropin": r.dropin, "url": r.url, "inference": r.inference,
                 "facts": [{"text": x.text, "basis": x.basis} for x in r.facts]}
                for r in a.rows],
            "notes": list(a.notes),
        })
    return out


def snapshot_json(paths: HostPaths) -> dict[str, Any]:
    """The inventory and each Kata handler's exposure as JSON; the schema lists every field,
    defaults included, so consumers need no defaults. Each device carries the Kata sandbox,
    pod and namespace using it."""
    from diag.sources import sysfs

    devices = sysfs.scan(paths)
    owners = _owners(paths, devices)
    kata = kata_json(_exposure(paths))
    return {
        "schema": SNAPSHOT_SCHEMA,
        "kind": "vfiowatch_snapshot",
        "agent_version": __version__,
        "root": str(paths.root),
        "devices": [{**_every_field(d), **_owner_fields(owners.get(d.bdf))} for d in devices],
        "kata": kata,
        "refused": paths.refusals.all(),
    }


def kata_lines(he: Any) -> list[str]:
    """Each Kata handler, its version and where it was read, cold_plug_vfio, and its exposure."""
    from diag.core import kata_exposure as kx

    if he is None or not he.facts:
        return []
    if all(f.assumed for f in he.facts):
        return []  # no Kata: nothing to say (`check` says it)
    lines = []
    for f, a in zip(he.facts, he.assessments, strict=True):
        version, cold = kx.version_and_config(f)
        rt = "runtime-rs" if f.runtime == "rs" else "Go"
        lines.append(f"Kata handler {safe(f.handler)} ({rt}): {safe(version)}; {safe(cold)}")
        for r in a.rows:
            what = f"Kata #{r.issue}" if r.issue.isdigit() else "an unknown Kata version's bugs"
            state = "exposed to" if r.exposed else "would be exposed (no VF pods can be given now) to"
            lines.append(f"  {'✗' if r.exposed else '·'} {state} {what} ({r.severity.label}): {safe(r.title)}")
            lines.append(f"    fix: {safe(r.fix)}")
            lines.extend(f"      {safe(x)}" for x in r.dropin.splitlines())
        if not a.rows:
            lines.append("  ✓ not exposed to a known Kata VFIO bug")
        lines.extend(f"  note: {safe(n)}" for n in a.notes)
    return lines


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
    lines.extend(kata_lines(_exposure(paths)))
    lines.extend(refused_lines(paths))
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
        "namespace using it; then each Kata runtime handler with its Kata version (and where it "
        "was read), effective cold_plug_vfio and the known Kata VFIO bugs it is exposed to, "
        "with the fix. Reads files only (sysfs, Kata's state files, /proc, Kata's and "
        "containerd's configuration, the package database); runs nothing, changes nothing."
    ),
    arguments=_arguments,
    run=_run,
))
