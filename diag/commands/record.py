"""Provides `vfiowatch record sysfs`: copy exactly the sysfs files the scanner reads into a tree.

The copy keeps symlinks as relative links inside the copy, so `scan(HostPaths(out))` on it gives
the same inventory as on the host. This is how the fixture trees in tests/fixtures/sysfs/ are
made. It reads the host and writes only under `out`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from diag.commands import Command, register
from diag.common.paths import HostPaths

DEVICE_FILES = (
    "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision",
    "driver_override", "numa_node", "enable", "sriov_numvfs", "sriov_totalvfs",
    "sriov_drivers_autoprobe", "modalias",
)
DEVICE_LINKS = ("driver", "iommu_group", "physfn")
NET_FILES = ("address", "operstate", "ifindex", "carrier")


class _Copier:
    def __init__(self, src_root: Path, dst_root: Path) -> None:
        self.src = src_root
        self.dst = dst_root
        self.files = 0

    def _target(self, real: Path) -> Path:
        return self.dst / real.relative_to(self.src)

    def dir(self, real: Path) -> None:
        self._target(real).mkdir(parents=True, exist_ok=True)

    def file(self, path: Path) -> None:
        real = Path(os.path.realpath(path))
        if not real.is_file():
            return
        try:
            with open(real, "rb") as fh:
                data = fh.read(65536)
        except OSError:
            return  # write-only or unreadable attribute: the scanner records it the same way
        out = self._target(real)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        self.files += 1

    def link(self, path: Path) -> None:
        """Recreate the symlink `path` (inside the copy) pointing at the same relative target."""
        if not path.is_symlink():
            return
        parent_real = Path(os.path.realpath(path.parent))
        target_real = Path(os.path.realpath(path))
        out = self._target(parent_real) / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(self._target(target_real), out.parent)
        if out.is_symlink() or out.exists():
            out.unlink()
        out.symlink_to(rel)
        if target_real.is_dir():
            self._target(target_real).mkdir(parents=True, exist_ok=True)


def record_sysfs(paths: HostPaths, out: Path) -> int:
    """Copy the PCI view of `paths` into `out`; returns the number of files copied."""
    paths.require_sysfs()
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    c = _Copier(paths.root, out)
    devs = paths.pci_devices
    c.dir(Path(os.path.realpath(devs)))
    for bdf in sorted(os.listdir(devs)):
        link = devs / bdf
        c.link(link)
        real = Path(os.path.realpath(link))
        c.dir(real)
        for name in DEVICE_FILES:
            c.file(real / name)
        for name in DEVICE_LINKS:
            c.link(real / name)
        for name in os.listdir(real):
            if name.startswith("virtfn"):
                c.link(real / name)
        group = real / "iommu_group"
        if group.is_symlink():
            gdir = Path(os.path.realpath(group))
            if (gdir / "devices").is_dir():
                for member in os.listdir(gdir / "devices"):
                    c.link(gdir / "devices" / member)
        if (real / "net").is_dir():
            for ifname in os.listdir(real / "net"):
                nd = real / "net" / ifname
                c.dir(nd)
                for name in NET_FILES:
                    c.file(nd / name)
                c.link(paths.sys / "class" / "net" / ifname)
        if (real / "vfio-dev").is_dir():
            for name in os.listdir(real / "vfio-dev"):
                c.dir(real / "vfio-dev" / name)
    for sub in ("drivers",):
        d = paths.sys / "bus" / "pci" / sub
        if d.is_dir():
            for name in os.listdir(d):
                c.dir(d / name)
    iommu = paths.sys / "class" / "iommu"
    (out / "sys" / "class" / "iommu").mkdir(parents=True, exist_ok=True)
    if iommu.is_dir():
        for name in os.listdir(iommu):
            c.link(iommu / name)
    vfio = paths.dev / "vfio"
    if vfio.is_dir():
        (out / "dev" / "vfio").mkdir(parents=True, exist_ok=True)
        for name in os.listdir(vfio):
            if name.isdigit():
                # Character devices cannot be copied; an empty file stands for the node.
                (out / "dev" / "vfio" / name).touch()
    return c.files


def _arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    s = what.add_parser(
        "sysfs",
        help="copy the sysfs files the PCI scanner reads into a directory tree",
        description=(
            "Copy exactly the sysfs files the PCI scanner reads (ids, class, driver links, "
            "driver_override, IOMMU groups, SR-IOV links, net/) into OUT, keeping symlinks as "
            "relative links, so `vfiowatch --root OUT snapshot` shows the same inventory. "
            "Reads the host; writes only under OUT."
        ),
    )
    s.add_argument("--out", required=True, type=Path, help="directory to write (replaced)")
    s.set_defaults(func=_run_sysfs)


def _run_sysfs(args: argparse.Namespace) -> int:
    n = record_sysfs(HostPaths.at(args.root), args.out)
    print(f"copied {n} files to {args.out}")
    return 0


register(Command(
    name="record",
    help="record kernel data as test fixtures",
    description="Record what the agent reads, in the formats of tests/fixtures/.",
    arguments=_arguments,
    run=None,
))
