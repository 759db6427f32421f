"""Guest helpers: load the SR-IOV drivers, make VFs, move a VF the ways Kata does, record netlink.

Writes are made the way Kata's Go runtime makes them: open(O_WRONLY) and one write() with no
trailing newline. Every write is logged with both clocks and its errno.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO

import labio

PF = "0000:01:00.0"
VF0 = "0000:01:10.0"
VF1 = "0000:01:10.2"
VF_ID = "8086 10ca"
PCI = "/sys/bus/pci"
NETLINK_KOBJECT_UEVENT = 15
SO_RCVBUFFORCE = 33
RTMGRP_LINK = 1


@dataclass(slots=True)
class Action:
    t_mono_ns: int
    t_real_ns: int
    path: str
    value: str
    result: str


ACTIONS: list[Action] = []


def write(path: str, value: str) -> str:
    """One Kata-style write; returns "ok" or the errno name (never raises)."""
    t_mono, t_real = time.monotonic_ns(), time.time_ns()
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
        res = "ok"
    except OSError as exc:
        res = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    ACTIONS.append(Action(t_mono, t_real, path, value, res))
    labio.say(f"write {path} <- {value!r}: {res}")
    return res


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def modprobe(*mods: str) -> None:
    for m in mods:
        subprocess.run(["modprobe", m], check=True)


def setup() -> None:
    """Loads the PF driver (no udev runs here, so nobody else does), igbvf first, and vfio."""
    modprobe("igb", "igbvf", "vfio-pci", "vfio_iommu_type1")
    wait_for(lambda: os.path.exists(f"{PCI}/devices/{PF}/driver"), 5)
    pf_net = os.listdir(f"{PCI}/devices/{PF}/net")[0]
    subprocess.run(["ip", "link", "set", pf_net, "up"], check=True)


def enable_vfs(n: int) -> None:
    write(f"{PCI}/devices/{PF}/sriov_numvfs", str(n))
    if n:
        wait_for(lambda: os.path.exists(f"{PCI}/devices/{VF1}/driver"), 10)


def driver_of(bdf: str) -> str:
    link = f"{PCI}/devices/{bdf}/driver"
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else ""


def wait_for(cond, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def stop_monitors(procs: list[tuple[subprocess.Popen[bytes], BinaryIO]]) -> None:
    """Stop monitor processes (udevadm, ip monitor) as Ctrl-C would, so they flush what they
    printed; kill one that does not exit; close each one's output file."""
    for p, fh in procs:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
        fh.close()


# --- the moves -------------------------------------------------------------------------------


def kata38_bind(bdf: str) -> None:
    """Kata Go >= 3.8 BindDevicetoVFIO: driver_override, driver/unbind, drivers_probe."""
    write(f"{PCI}/devices/{bdf}/driver_override", "vfio-pci")
    write(f"{PCI}/devices/{bdf}/driver/unbind", bdf)
    write(f"{PCI}/drivers_probe", bdf)


def kata38_restore(bdf: str, host_driver: str) -> None:
    """Kata Go >= 3.8 BindDevicetoHost: host driver to driver_override, unbind, drivers_probe."""
    write(f"{PCI}/devices/{bdf}/driver_override", host_driver)
    write(f"{PCI}/devices/{bdf}/driver/unbind", bdf)
    write(f"{PCI}/drivers_probe", bdf)


def kata30_bind(bdf: str, vendor_device: str = VF_ID) -> None:
    """Kata Go 3.0-3.7: driver/unbind, vfio-pci new_id, vfio-pci bind."""
    write(f"{PCI}/devices/{bdf}/driver/unbind", bdf)
    write(f"{PCI}/drivers/vfio-pci/new_id", vendor_device)
    write(f"{PCI}/drivers/vfio-pci/bind", bdf)


def kata30_restore(bdf: str, host_driver: str, vendor_device: str = VF_ID) -> None:
    """Kata Go 3.0-3.7: driver/unbind, vfio-pci remove_id, bind to the host driver."""
    write(f"{PCI}/devices/{bdf}/driver/unbind", bdf)
    write(f"{PCI}/drivers/vfio-pci/remove_id", vendor_device)
    write(f"{PCI}/drivers/{host_driver}/bind", bdf)


# --- raw netlink recorder --------------------------------------------------------------------


@dataclass(slots=True)
class Datagram:
    t_mono_ns: int
    t_real_ns: int
    socket: str
    data: bytes


@dataclass
class Recorder:
    """Reads raw kernel uevent (group 1) and rtnetlink link (RTMGRP_LINK) datagrams in a thread."""

    records: list[Datagram] = field(default_factory=list)
    last_ns: int = 0

    def __post_init__(self) -> None:
        self.ue = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        self.ue.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.ue.bind((0, 1))
        self.rt = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.rt.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.rt.bind((0, RTMGRP_LINK))
        self._stop = False
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        names = {self.ue.fileno(): ("uevent", self.ue), self.rt.fileno(): ("rtnl", self.rt)}
        while not self._stop:
            ready, _, _ = select.select(list(names), [], [], 0.1)
            for fd in ready:
                name, sock = names[fd]
                data = sock.recv(1 << 20)
                rec = Datagram(time.monotonic_ns(), time.time_ns(), name, data)
                with self._lock:
                    self.records.append(rec)
                    self.last_ns = rec.t_mono_ns

    def take(self) -> list[Datagram]:
        with self._lock:
            out, self.records = self.records, []
        return out

    def settle(self, quiet: float = 0.5, limit: float = 8.0) -> None:
        """Waits until no datagram has arrived for `quiet` seconds (at most `limit`)."""
        start = time.monotonic_ns()
        while time.monotonic_ns() - start < limit * 1e9:
            time.sleep(0.05)
            last = max(self.last_ns, start)
            if time.monotonic_ns() - last > quiet * 1e9:
                return

    def close(self) -> None:
        self._stop = True
        self._t.join()
        self.ue.close()
        self.rt.close()


def format_dump(records: list[Datagram], header: list[str], sock: str) -> str:
    """Renders records of one socket in the text dump format of tests/fixtures/README.md."""
    lines = ["# " + h if h else "#" for h in header]
    for r in records:
        if r.socket != sock:
            continue
        lines.append("")
        lines.append(f"# t_mono_ns={r.t_mono_ns} t_real_ns={r.t_real_ns} socket={r.socket} "
                     f"len={len(r.data)}")
        hx = r.data.hex()
        lines.extend(hx[i:i + 64] for i in range(0, len(hx), 64))
    return "\n".join(lines) + "\n"
