"""Gzip bombs for the postmortem's bounds: a small .gz that inflates to a huge stream of one
repeated unit after a head that makes a chosen importer claim it."""

from __future__ import annotations

import zlib
from pathlib import Path

UDEV_HEAD = b"monitor will print the received events for:\nKERNEL - the kernel uevent\n\n"
UDEV_UNIT = (b"KERNEL[6.853992] bind     /devices/pci0000:00/0000:00:02.0/0000:01:10.0 (pci)\n"
             b"ACTION=bind\nDEVPATH=/devices/pci0000:00/0000:00:02.0/0000:01:10.0\n"
             b"SUBSYSTEM=pci\nDRIVER=vfio-pci\nPCI_SLOT_NAME=0000:01:10.0\nSEQNUM=764\n\n")
KATA_HEAD = b'[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n'
KATA_UNIT = b"# " + b"x" * 77 + b"\n"
STATE_HEAD = b'{"SandboxContainer": "0123", "HypervisorState": {"Pid": 1},\n'
SNAPSHOT_HEAD = b'{"schema": 1, "kind": "vfiowatch-snapshot",\n'


def gzip_bomb(path: Path, head: bytes, unit: bytes, total: int) -> Path:
    """Write `head` then `unit` repeated up to `total` bytes, gzip-compressed at level 9."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = unit * max(1, (1 << 20) // len(unit))
    with open(path, "wb") as fh:
        fh.write(z.compress(head))
        written = len(head)
        while written < total:
            fh.write(z.compress(block))
            written += len(block)
        fh.write(z.flush())
    return path
