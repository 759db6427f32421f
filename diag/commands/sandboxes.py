"""Provides `vfiowatch sandboxes`: Kata at a glance, each handler and each sandbox with its VFs.

Like `kata-runtime list` and `kubectl get pods -o wide` for the VF question: every Kata runtime
handler with its effective `cold_plug_vfio` and where that value comes from; every sandbox with
its runtime, pod, namespace, QEMU pid, its VFs (address, the host driver Kata gives it back
to, the driver and netdev now) and the VFIO groups QEMU holds open. Table or JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from diag import __version__
from diag.commands import Command, refused_lines, register
from diag.commands import kataview as kv
from diag.common.paths import HostPaths
from diag.common.text import safe

SANDBOXES_SCHEMA = 1


def _handler_json(c: Any) -> dict[str, Any]:
    return {
        "handler": c.handler, "runtime": c.runtime, "config_path": c.path,
        "dropins": list(c.dropins), "cold_plug_vfio": c.cold_plug_vfio,
        "cold_plug_origin": kv.origin(c), "hot_plug_vfio": c.hot_plug_vfio,
        "pcie_root_port": c.pcie_root_port, "pcie_switch_port": c.pcie_switch_port,
        "assumed": c.assumed,
        "settings": [{"key": s.key, "value": s.value, "origin": s.origin} for s in c.settings],
    }


def _sandbox_json(sb: kv.SandboxView) -> dict[str, Any]:
    e = sb.event
    return {
        "sandbox_id": e.sandbox_id, "runtime": e.runtime, "handler": e.handler, "pod": e.pod,
        "namespace": e.pod_namespace, "pod_uid": e.pod_uid,
        "netns": e.netns.label if e.netns else None,
        "cold_plug_vfio": e.cold_plug_vfio, "cold_plug_origin": e.cold_plug_origin,
        "hot_plug_vfio": e.hot_plug_vfio, "pcie_root_port": e.pcie_root_port,
        "pcie_switch_port": e.pcie_switch_port, "config_path": e.config_path,
        "config_changed_since_start": e.config_changed_since_start, "refused": e.refused or None,
        "state_file": e.state_file, "shim_pid": e.shim_pid, "vmm_pid": e.vmm_pid,
        "vfs": [{"bdf": v.bdf, "host_driver": v.host_driver, "driver": v.driver,
                 "netdevs": list(v.netdevs), "iommu_group": v.iommu_group,
                 "vfio_group_path": v.vfio_group_path, "held_by_vmm": v.held_by_vmm}
                for v in sb.vfs],
        "vmm_vfio_devices": [{"bdf": b, "bus": bus or None} for b, bus in
                             zip(e.vmm_vfio_devices, e.vmm_vfio_buses or
                                 ("",) * len(e.vmm_vfio_devices), strict=True)],
        "vmm_held_groups": [{"group": g, "path": f"/dev/vfio/{g}", "devices": list(m)}
                            for g, m in sb.vmm_held],
    }


def sandboxes_json(paths: HostPaths, view: kv.KataView) -> dict[str, Any]:
    return {
        "schema": SANDBOXES_SCHEMA, "kind": "vfiowatch_sandboxes", "agent_version": __version__,
        "root": str(paths.root),
        "handlers": [_handler_json(c) for c in view.handlers],
        "sandboxes": [_sandbox_json(s) for s in view.sandboxes],
        "problems": view.problems,
        "refused": paths.refusals.all(),
    }


def _vf_line(v: kv.VfView) -> str:
    now = v.driver or "no driver"
    netdev = ",".join(v.netdevs) or "-"
    held = (f"{v.vfio_group_path or f'/dev/vfio/{v.iommu_group}'} held by QEMU" if v.held_by_vmm
            else "not held by QEMU")
    return (f"  └ VF {v.bdf}  host driver {v.host_driver or '?'}  now {now}  netdev {netdev}  "
            f"{held}")


def sandboxes_table(paths: HostPaths, view: kv.KataView) -> str:
    lines = [f"Kata handlers ({len(view.handlers)})"]
    lines += kv.table(view.handlers, kv.HANDLER_COLUMNS)
    lines += ["", f"Kata sandboxes ({len(view.sandboxes)})"]
    if not view.sandboxes:
        lines.append("(none running)")
    else:
        rows = kv.table(view.sandboxes, kv.SANDBOX_COLUMNS)
        lines.append(rows[0])
        for sb, row in zip(view.sandboxes, rows[1:], strict=True):
            lines.append(row)
            lines += [safe(_vf_line(v)) for v in sb.vfs]
            vmm = ", ".join(f"{b} ({bus or 'no bus'})" for b, bus in zip(
                sb.event.vmm_vfio_devices,
                sb.event.vmm_vfio_buses or ("",) * len(sb.event.vmm_vfio_devices), strict=True))
            if vmm:
                lines.append(safe(f"    QEMU -device vfio-pci: {vmm}"))
            for group, members in sb.vmm_held:
                lines.append(safe(f"    QEMU holds /dev/vfio/{group}: {', '.join(members) or '?'}"))
    for p in view.problems:
        lines.append(f"! {safe(p)}")
    lines.extend(refused_lines(paths))
    return "\n".join(lines)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table for people, json for machines (schema in README 'Kata at a glance')")


def _run(args: argparse.Namespace) -> int:
    from diag.sources import sysfs

    paths = HostPaths.at(args.root)
    devices = sysfs.scan(paths)  # refuses a root without sysfs, as every host command does
    view = kv.read(paths, devices)
    if args.format == "json":
        json.dump(sandboxes_json(paths, view), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(sandboxes_table(paths, view))
    return 0


register(Command(
    name="sandboxes",
    help="Kata at a glance: each handler's cold_plug_vfio, each sandbox with its pod and VFs",
    description=(
        "List every Kata runtime handler with its effective cold_plug_vfio and where that value "
        "comes from (file, drop-in, default), then every Kata sandbox with its runtime, "
        "handler, pod, namespace and QEMU pid, its VFs (address, the host driver Kata gives it "
        "back to, its driver and netdev now, whether QEMU holds its VFIO group) and the "
        "vfio-pci devices on QEMU's command line. Reads Kata's configuration and state files, "
        "/proc and sysfs; changes nothing. Like `kata-runtime list` and `kubectl get -o wide`."
    ),
    arguments=_arguments,
    run=_run,
))
