"""Provides `vfiowatch record sysfs`: copy exactly the sysfs files the scanner reads into a tree.

The copy keeps symlinks as relative links inside the copy, so `scan(HostPaths(out))` on it gives
the same inventory as on the host. This is how the fixture trees in tests/fixtures/sysfs/ are
made. It reads the host and writes only under `out`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from diag.paths import HostPaths

DEVICE_FILES = (
    "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision",
    "driver_override", "numa_node", "enable", "sriov_numvfs", "sriov_totalvfs",
    "sriov_drivers_autoprobe", "modalias",
)
DEVICE_LINKS = ("driver", "iommu_group", "physfn")
NET_FILES = ("address", "operstate", "ifindex", "carrier")


class _Copier:
    """Copies host paths (read under the root, confined) to the same paths under `dst`."""

    def __init__(self, paths: HostPaths, dst_root: Path) -> None:
        self.paths = paths
        self.dst = dst_root
        self.files = 0

    def _target(self, real: str) -> Path:
        # `real` comes from paths.resolve: absolute, without `..`, so it stays under dst.
        return self.dst / real.lstrip("/")

    def dir(self, host: str) -> None:
        try:
            real = self.paths.resolve(host)
        except OSError:
            return
        self._target(real).mkdir(parents=True, exist_ok=True)

    def file(self, host: str) -> None:
        try:
            real = self.paths.resolve(host)
            data = self.paths.read_bytes(real, 65536, regular=True)
        except OSError:
            return  # missing, write-only or refused: the scanner meets it the same way
        out = self._target(real)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        self.files += 1

    def link(self, host: str) -> None:
        """Recreate the symlink `host` (inside the copy) pointing at the same relative target."""
        if not self.paths.is_link(host):
            return
        try:
            parent_real = self.paths.resolve(os.path.dirname(host))
            target_real = self.paths.resolve(host, strict=False)
        except OSError:
            return
        out = self._target(parent_real) / os.path.basename(host)
        out.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(self._target(target_real), out.parent)
        if out.is_symlink() or out.exists():
            out.unlink()
        out.symlink_to(rel)
        if self.paths.is_dir(target_real):
            self._target(target_real).mkdir(parents=True, exist_ok=True)

    def listdir(self, host: str) -> list[str]:
        try:
            return sorted(self.paths.listdir(host))
        except OSError:
            return []


def record_sysfs(paths: HostPaths, out: Path) -> int:
    """Copy the PCI view of `paths` into `out`; returns the number of files copied. Paths that
    lead outside the root are not copied (they are in `paths.refusals`)."""
    paths.require_sysfs()
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    c = _Copier(paths, out)
    devs = "/sys/bus/pci/devices"
    c.dir(devs)
    for bdf in c.listdir(devs):
        link = f"{devs}/{bdf}"
        c.link(link)
        try:
            real = paths.resolve(link)
        except OSError:
            continue
        c.dir(real)
        for name in DEVICE_FILES:
            c.file(f"{real}/{name}")
        for name in DEVICE_LINKS:
            c.link(f"{real}/{name}")
        for name in c.listdir(real):
            if name.startswith("virtfn"):
                c.link(f"{real}/{name}")
        group = f"{real}/iommu_group"
        if paths.is_link(group):
            for member in c.listdir(f"{group}/devices"):
                c.link(f"{group}/devices/{member}")
        for ifname in c.listdir(f"{real}/net"):
            nd = f"{real}/net/{ifname}"
            c.dir(nd)
            for name in NET_FILES:
                c.file(f"{nd}/{name}")
            c.link(f"/sys/class/net/{ifname}")
        for name in c.listdir(f"{real}/vfio-dev"):
            c.dir(f"{real}/vfio-dev/{name}")
    for name in c.listdir("/sys/bus/pci/drivers"):
        c.dir(f"/sys/bus/pci/drivers/{name}")
    (out / "sys" / "class" / "iommu").mkdir(parents=True, exist_ok=True)
    for name in c.listdir("/sys/class/iommu"):
        c.link(f"/sys/class/iommu/{name}")
    if paths.is_dir("/dev/vfio"):
        (out / "dev" / "vfio").mkdir(parents=True, exist_ok=True)
        for name in c.listdir("/dev/vfio"):
            if name.isdigit():
                # Character devices cannot be copied; an empty file stands for the node.
                (out / "dev" / "vfio" / name).touch()
    return c.files
