"""A hostile `--root` tree for the confinement tests: links that escape the root at every level.

`build(tmp)` makes `tmp/root` (what `--root` is given) and `tmp/outside` (what it must never
read). Everything outside holds CANARY, in file contents and in names that only a listing of
an outside directory would reveal; every escaping link comes in two kinds, an absolute target
(`/tmp/.../outside/x`, which a chroot takes under the root) and a `../` target that climbs
out of the root. Legitimate parts (a PF with one VF, a Kata handler, a shim process) sit beside
them so the readers have real work to do. `OutsideWatch` reports any open or read of anything
under `outside/` by any process (inotify), which catches reads whose content never shows.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

CANARY = "vfw-canary-5d1c7e"
KATA_FIXTURE = Path(__file__).parent / "fixtures" / "kata" / "go-physical"
SID = "3acfa8826f59dcc9bd876fd171a9abd9536433429c0028b1562c9370740b258f"
PF, VF = "0000:00:01.0", "0000:00:01.1"
ABS_DEV, REL_DEV = "0000:00:02.0", "0000:00:03.0"
SHIM_PID, ESCAPED_PID = 4242, 4243


@dataclass(frozen=True)
class Hostile:
    root: Path
    outside: Path


def _w(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _abs(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(str(target))


def _rel(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))  # climbs out of the root


def _outside(out: Path) -> None:
    _w(out / "secret", f"{CANARY}-secret\n")
    dev = out / "dev0"
    for name, value in (("vendor", "0x8086"), ("device", "0x1521"), ("class", "0x020000"),
                        ("subsystem_vendor", "0x8086"), ("subsystem_device", "0x0000"),
                        ("driver_override", f"{CANARY}-override"), ("numa_node", "0"),
                        ("sriov_totalvfs", "7"), ("sriov_numvfs", "7")):
        _w(dev / name, value + "\n")
    _w(dev / "net" / f"{CANARY}-if" / "address", "00:11:22:33:44:55\n")
    (dev / "driver").symlink_to("drivers/igb")
    _w(out / "drv" / f"{CANARY}-bind", "")
    _w(out / "group" / "devices" / f"{CANARY}-member", "")
    _w(out / "netdir" / f"{CANARY}-if0" / "address", "00:11:22:33:44:66\n")
    _w(out / "dir" / f"{CANARY}-name", "")
    _w(out / "build" / "include" / "generated" / "utsrelease.h", f'#define UTS_RELEASE "{CANARY}"\n')
    _w(out / "pci.ids", f"8086  {CANARY} Corporation\n\t1521  {CANARY} Device\n")
    _w(out / "kata.toml", f'[hypervisor.qemu]\nmachine_type = "{CANARY}"\ncold_plug_vfio = "root-port"\n'
                          'pcie_root_port = 2\n')
    _w(out / "dropin.toml", f'[hypervisor.qemu]\nmachine_type = "{CANARY}-dropin"\n')
    _w(out / "config.d" / f"{CANARY}.toml", f'[hypervisor.qemu]\nmachine_type = "{CANARY}-dir"\n')
    _w(out / "containerd.toml",
       f'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{CANARY}]\n'
       f'  runtime_type = "io.containerd.kata.v2"\n')
    persist = (KATA_FIXTURE / "run/vc/sbs" / SID / "persist.json").read_text()
    _w(out / "persist.json", persist.replace("/kubepods", f"/{CANARY}"))
    _w(out / "sbdir" / "persist.json", persist.replace("/kubepods", f"/{CANARY}"))
    _w(out / "sbdir" / "state.json", persist.replace("/kubepods", f"/{CANARY}"))
    _w(out / "cmdline", f"containerd-shim-kata-v2\0-id\0{CANARY}\0".encode())
    _w(out / "environ", f"KATA_CONF_FILE=/{CANARY}\0".encode())
    _w(out / "procpid" / "comm", "containerd-shim\n")
    _w(out / "procpid" / "cmdline", f"containerd-shim-kata-v2\0-id\0{CANARY}-pid\0".encode())
    _w(out / "procpid" / "stat", f"4243 ({CANARY}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0\n")
    _w(out / "stat", "btime 1700000000\n")
    _w(out / "mountinfo", "1 0 0:1 / / rw - cgroup2 cgroup2 rw\n")
    _w(out / "hostname", f"{CANARY}-host\n")
    _w(out / "nsfile", "")
    _w(out / "driverctl" / "pci-0000:00:01.0", "vfio-pci\n")
    _w(out / "driverctl-file", "vfio-pci\n")
    _w(out / "kmsg", f"6,1,1,-;{CANARY} kmsg\n")
    _w(out / "iommu" / f"{CANARY}-dmar", "")


def _sysfs(r: Path, out: Path) -> None:
    devices = r / "sys/devices/pci0000:00"
    for bdf, extra in ((PF, {"sriov_totalvfs": "2", "sriov_numvfs": "2"}), (VF, {})):
        d = devices / bdf
        for name, value in (("vendor", "0x8086"), ("device", "0x1521" if bdf == PF else "0x1520"),
                            ("class", "0x020000"), ("subsystem_vendor", "0x8086"),
                            ("subsystem_device", "0x0000"), ("numa_node", "0"), *extra.items()):
            _w(d / name, value + "\n")
        _w(r / "sys/bus/pci/drivers/igb/bind", "")
        (r / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
        (r / "sys/bus/pci/devices" / bdf).symlink_to(f"../../../devices/pci0000:00/{bdf}")
    pf, vf = devices / PF, devices / VF
    # The PF: a legitimate driver and VF link, every other level escapes with an absolute link.
    (pf / "driver").symlink_to("../../../bus/pci/drivers/igb")
    (pf / "virtfn0").symlink_to(f"../{VF}")
    _abs(pf / "virtfn1", out / "dev0")
    _abs(pf / "driver_override", out / "secret")
    _abs(pf / "iommu_group", out / "group")
    _abs(pf / "net", out / "netdir")
    # The VF: the same levels escape with `../` links.
    _rel(vf / "physfn", out / "dev0")
    _rel(vf / "driver", out / "drv")
    _rel(vf / "driver_override", out / "secret")
    _rel(vf / "iommu_group", out / "group")
    _rel(vf / "net", out / "netdir")
    _rel(vf / "vendor.tmp", out / "secret")
    os.replace(vf / "vendor.tmp", vf / "vendor")
    # Whole device directories that escape.
    _abs(r / "sys/bus/pci/devices" / ABS_DEV, out / "dev0")
    _rel(r / "sys/bus/pci/devices" / REL_DEV, out / "dev0")
    _abs(r / "sys/class/iommu/dmar0", out / "iommu")
    _rel(r / "sys/class/iommu/dmar1", out / "iommu")
    _rel(r / "sys/class/net/eth9", out / "dev0" / "net")
    _abs(r / "dev/vfio", out / "dir")


def _kata(r: Path, out: Path) -> None:
    shutil.copytree(KATA_FIXTURE, r, symlinks=True, dirs_exist_ok=True)
    cfg_dir = r / "opt/kata/share/defaults/kata-containers/runtimes/qemu"
    _abs(cfg_dir / "config.d" / "10-abs.toml", out / "dropin.toml")
    _rel(cfg_dir / "config.d" / "20-rel.toml", out / "dropin.toml")
    ctd = r / "etc/containerd/config.toml"
    ctd.write_text(ctd.read_text().replace("version = 3", 'version = 3\nimports = ["/etc/containerd/conf.d/*.toml"]')
                   + '\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-rel]\n'
                     '  runtime_type = "io.containerd.kata-rel.v2"\n'
                     '  runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"\n'
                     '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-rel.options]\n'
                     '  ConfigPath = "/etc/kata-containers/rel/configuration.toml"\n'
                     '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-dir]\n'
                     '  runtime_type = "io.containerd.kata-dir.v2"\n'
                     '  runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"\n'
                     '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-dir.options]\n'
                     '  ConfigPath = "/etc/kata-containers/dir/configuration.toml"\n')
    _abs(r / "etc/containerd/conf.d/10-abs.toml", out / "containerd.toml")
    _rel(r / "etc/containerd/conf.d/20-rel.toml", out / "containerd.toml")
    _rel(r / "etc/kata-containers/rel/configuration.toml", out / "kata.toml")
    _w(r / "etc/kata-containers/dir/configuration.toml",
       (cfg_dir / "configuration-qemu.toml").read_text())
    _rel(r / "etc/kata-containers/dir/config.d", out / "config.d")
    sbs = r / "run/vc/sbs"
    (sbs / SID / "persist.json").unlink()
    _abs(sbs / SID / "persist.json", out / "persist.json")
    _rel(sbs / "sb-rel", out / "sbdir")
    _abs(r / "run/kata" / "sb-abs", out / "sbdir")
    _rel(r / "run/kata" / "sb-rel", out / "sbdir")


def _proc(r: Path, out: Path) -> None:
    p = r / "proc" / str(SHIM_PID)
    _w(p / "comm", "containerd-shim\n")
    _w(p / "stat", f"{SHIM_PID} (containerd-shim) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0\n")
    _w(p / "cgroup", "0::/\n")
    _abs(p / "cmdline", out / "cmdline")
    _rel(p / "environ", out / "environ")
    (p / "exe").symlink_to("/opt/kata/bin/containerd-shim-kata-v2")  # a magic link's name
    (p / "ns").mkdir()
    (p / "ns" / "net").symlink_to("/proc/self/ns/net")  # not a magic link here: the host's netns
    (p / "fd").mkdir()
    (p / "fd" / "3").symlink_to("/dev/vfio/7")
    _rel(r / "proc" / str(ESCAPED_PID), out / "procpid")
    _w(r / "proc/1/comm", "systemd\n")
    (r / "proc/1/ns").mkdir(parents=True)
    _rel(r / "proc/1/ns/net", out / "nsfile")
    _abs(r / "proc/stat", out / "stat")
    _rel(r / "proc/config.gz", out / "secret")
    (r / "proc/self").symlink_to(str(SHIM_PID))
    _rel(r / "proc" / str(SHIM_PID) / "mountinfo", out / "mountinfo")
    (r / "run/netns").mkdir(parents=True)
    (r / "run/netns/host-abs").symlink_to("/proc/self/ns/net")
    _rel(r / "run/netns/rel", out / "nsfile")
    _abs(r / "etc/hostname", out / "hostname")
    _rel(r / "etc/driverctl.d", out / "driverctl")
    _rel(r / "dev/kmsg", out / "kmsg")
    _rel(r / "usr/share/misc/pci.ids", out / "pci.ids")
    _rel(r / "lib/modules" / platform.release() / "build", out / "build")
    _w(r / "sys/fs/cgroup/kubepods/x", "")


def build(tmp: Path) -> Hostile:
    """The hostile tree under `tmp` (see the module docstring)."""
    root, out = tmp / "root", tmp / "outside"
    _outside(out)
    _kata(root, out)
    _sysfs(root, out)
    _proc(root, out)
    return Hostile(root, out)


def texts_under(tree: Path) -> str:
    """Every name, link text and file content under `tree` (links not followed), one string."""
    parts: list[str] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            parts.append(p)
            if os.path.islink(p):
                parts.append(os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as fh:
                    parts.append(fh.read().decode("utf-8", "replace"))
    return "\n".join(parts)


IN_ACCESS, IN_OPEN = 0x1, 0x20


class OutsideWatch:
    """inotify on every directory under `outside`: any open or read there, by any process."""

    def __init__(self, outside: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.names: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(outside):
            wd = self._libc.inotify_add_watch(self.fd, dirpath.encode(), IN_ACCESS | IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {dirpath}")
            self.names[wd] = dirpath
        self.touched()  # the walk above opened the directories it watches

    def touched(self) -> list[str]:
        """What was opened or read under `outside` since the watch began (or the last call)."""
        seen: list[str] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return sorted(set(seen))
            off = 0
            while off < len(data):
                wd, _mask, _cookie, size = struct.unpack_from("iIII", data, off)
                name = data[off + 16: off + 16 + size].rstrip(b"\0").decode()
                seen.append(os.path.join(self.names.get(wd, "?"), name))
                off += 16 + size

    def close(self) -> None:
        os.close(self.fd)
