"""Smoke scenario: prints the guest's PCI devices and IOMMU state, enables and removes 2 VFs."""

from __future__ import annotations

import subprocess

import labio
import sriov


def main() -> int:
    out = [subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout]
    out.append(subprocess.run(["lspci", "-nnk"], capture_output=True, text=True).stdout)
    sriov.setup()
    sriov.enable_vfs(2)
    out.append(subprocess.run(["lspci", "-nnk"], capture_output=True, text=True).stdout)
    out.append(subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout)
    labio.send("smoke.txt", "\n".join(out).encode())
    return 0
