#!/usr/bin/python3
"""Lab VMM stand-in: opens /dev/vfio/<group> with the VFIO ioctls QEMU uses and holds the device.

Installed as /opt/kata/bin/qemu-system-x86_64 and started with QEMU-like arguments
(`-name sandbox-<sid> -device vfio-pci,host=<BDF>`), so both its comm and its cmdline look like
Kata's VMM. Holds the group, container and device fds until SIGTERM.
"""

import fcntl
import os
import signal
import struct
import sys
import time

VFIO_TYPE = ord(";")
VFIO_BASE = 100


def _io(nr: int) -> int:
    return (VFIO_TYPE << 8) | (VFIO_BASE + nr)  # _IO(';', 100 + nr)


VFIO_GET_API_VERSION = _io(0)
VFIO_CHECK_EXTENSION = _io(1)
VFIO_SET_IOMMU = _io(2)
VFIO_GROUP_GET_STATUS = _io(3)
VFIO_GROUP_SET_CONTAINER = _io(4)
VFIO_GROUP_GET_DEVICE_FD = _io(6)
VFIO_TYPE1_IOMMU = 1
VFIO_GROUP_FLAGS_VIABLE = 1


def hold(bdf: str) -> list[int]:
    group = os.path.basename(os.readlink(f"/sys/bus/pci/devices/{bdf}/iommu_group"))
    container = os.open("/dev/vfio/vfio", os.O_RDWR)
    if fcntl.ioctl(container, VFIO_GET_API_VERSION) != 0:
        raise SystemExit("unexpected VFIO API version")
    if not fcntl.ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU):
        raise SystemExit("no VFIO type 1 IOMMU")
    gfd = os.open(f"/dev/vfio/{group}", os.O_RDWR)
    status = bytearray(struct.pack("II", 8, 0))
    fcntl.ioctl(gfd, VFIO_GROUP_GET_STATUS, status)
    if not struct.unpack("II", status)[1] & VFIO_GROUP_FLAGS_VIABLE:
        raise SystemExit(f"group {group} is not viable")
    fcntl.ioctl(gfd, VFIO_GROUP_SET_CONTAINER, struct.pack("i", container))
    fcntl.ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU)
    dfd = fcntl.ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, bdf.encode() + b"\0")
    return [container, gfd, dfd]


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    args = sys.argv[1:]
    bdfs = [a.split("host=", 1)[1].split(",")[0] for a in args if "host=" in a]
    fds = [fd for bdf in bdfs for fd in hold(bdf)]
    with open(f"/run/lab-actor-{os.getpid()}.done", "w") as fh:
        fh.write(f"holding {bdfs} fds {fds}\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
