"""Copies only the parts of sysfs (and /dev/vfio) that the vfiowatch scanner reads into a folder.

Symlinks stay symlinks with their kernel-given relative targets, and every target they point to
inside the copy exists. /dev/vfio/<group> nodes become empty regular files.
"""

from __future__ import annotations

import os
import shutil

DEVICE_FILES = [
    "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision",
    "driver_override", "numa_node", "enable", "sriov_numvfs", "sriov_totalvfs",
    "sriov_drivers_autoprobe", "sriov_offset", "sriov_stride", "modalias", "uevent",
]
DEVICE_LINKS = ["driver", "iommu_group", "physfn"]
NET_FILES = ["address", "operstate", "ifindex", "iflink", "carrier", "mtu", "uevent"]
# Write-only attributes of a driver folder: copied as empty files so the folder exists in git.
DRIVER_CONTROL = ["bind", "unbind", "new_id", "remove_id", "uevent"]


class Copier:
    def __init__(self, src: str, dst: str) -> None:
        self.src, self.dst = src.rstrip("/"), dst.rstrip("/")
        self.files: list[str] = []

    def _d(self, path: str) -> str:
        return self.dst + path[len(self.src):] if path.startswith(self.src) else self.dst + path

    def file(self, path: str) -> None:
        """Copies one attribute file (skips unreadable ones, like the scanner would)."""
        if not os.path.isfile(path):
            return
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            return
        out = self._d(path)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as fh:
            fh.write(data)
        self.files.append(path)

    def link(self, path: str) -> str | None:
        """Copies a symlink as-is; returns the real path it points to (or None)."""
        if not os.path.islink(path):
            return None
        out = self._d(path)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if not os.path.lexists(out):
            os.symlink(os.readlink(path), out)
            self.files.append(path)
        real = os.path.realpath(path)
        os.makedirs(self._d(real), exist_ok=True)
        return real

    def empty(self, path: str) -> None:
        """Records a file that exists but cannot be read (write-only) as an empty file."""
        if os.path.exists(path):
            out = self._d(path)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            open(out, "wb").close()
            self.files.append(path)

    def mkdir(self, path: str) -> None:
        os.makedirs(self._d(path), exist_ok=True)
        self.files.append(path + "/")


def copy(dst: str, src: str = "") -> list[str]:
    """Copies the scanner's view of `src` (default: the real root) under `dst`; returns paths."""
    c = Copier(src or "/", dst)
    s = src.rstrip("/")
    pci = s + "/sys/bus/pci"
    c.mkdir(pci + "/drivers")
    for drv in sorted(os.listdir(pci + "/drivers")):
        c.mkdir(f"{pci}/drivers/{drv}")
        for name in DRIVER_CONTROL:
            c.empty(f"{pci}/drivers/{drv}/{name}")
    c.file(pci + "/drivers_autoprobe")
    for bdf in sorted(os.listdir(pci + "/devices")):
        ddir = c.link(f"{pci}/devices/{bdf}")
        if ddir is None:
            continue
        for name in DEVICE_FILES:
            c.file(f"{ddir}/{name}")
        for name in DEVICE_LINKS:
            real = c.link(f"{ddir}/{name}")
            if name == "driver" and real:
                c.link(f"{real}/{bdf}")
            if name == "iommu_group" and real:
                c.file(f"{real}/type")
                for member in sorted(os.listdir(f"{real}/devices")):
                    c.link(f"{real}/devices/{member}")
        for name in sorted(os.listdir(ddir)):
            if name.startswith("virtfn"):
                c.link(f"{ddir}/{name}")
        if os.path.isdir(f"{ddir}/net"):
            c.mkdir(f"{ddir}/net")
            for ifname in sorted(os.listdir(f"{ddir}/net")):
                for f in NET_FILES:
                    c.file(f"{ddir}/net/{ifname}/{f}")
        if os.path.isdir(f"{ddir}/vfio-dev"):
            c.mkdir(f"{ddir}/vfio-dev")
            for vd in sorted(os.listdir(f"{ddir}/vfio-dev")):
                c.mkdir(f"{ddir}/vfio-dev/{vd}")
                c.file(f"{ddir}/vfio-dev/{vd}/dev")
    for cls in ("iommu", "net"):
        base = f"{s}/sys/class/{cls}"
        if not os.path.isdir(base):
            continue
        c.mkdir(base)
        for name in sorted(os.listdir(base)):
            real = c.link(f"{base}/{name}")
            if cls == "net" and real:
                for f in NET_FILES:
                    c.file(f"{real}/{f}")
            elif real:
                c.file(f"{real}/uevent")
    vfio = s + "/dev/vfio"
    if os.path.isdir(vfio):
        c.mkdir(vfio)
        for name in sorted(os.listdir(vfio)):
            out = c._d(f"{vfio}/{name}")
            open(out, "wb").close()
            c.files.append(f"{vfio}/{name}")
    return sorted(set(c.files))


if __name__ == "__main__":
    import sys

    shutil.rmtree(sys.argv[1], ignore_errors=True)
    for p in copy(sys.argv[1]):
        print(p)
