"""Capture scenario: records the real kernel's uevents, rtnetlink, udevadm/ip monitor output and a
sysfs copy while a VF is created and moved to vfio-pci and back the ways Kata does it.

Sends one tar (``capture.tar``) laid out like tests/fixtures: uevent/, netlink/, postmortem/,
sysfs/sriov-lab/ and actions.log.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import subprocess
import time
from pathlib import Path

import labio
import sriov
import sysfscopy
from sriov import PCI, PF, VF0, VF1

OUT = "/tmp/capture"


def keep_empty_dirs(out: str) -> None:
    """Git drops empty folders, so give each one the real file(s) it has in sysfs: a driver
    folder its write-only control files (as empty files), a device folder its uevent."""
    for dirpath, dirnames, filenames in os.walk(out):
        if dirnames or filenames:
            continue
        real = "/" + os.path.relpath(dirpath, out)
        if "/bus/pci/drivers/" not in real and os.path.isfile(real + "/uevent"):
            with contextlib.suppress(OSError):
                data = Path(real + "/uevent").read_bytes()
                Path(dirpath + "/uevent").write_bytes(data)
        for name in sysfscopy.DRIVER_CONTROL:
            if not os.path.exists(f"{dirpath}/{name}") and os.path.exists(f"{real}/{name}"):
                open(f"{dirpath}/{name}", "wb").close()


def snapshot_sysfs(out: str) -> str:
    """Copies the scanner's view with the project's own `vfiowatch record sysfs` when the guest
    has it, else with the lab's small copier; either way adds the /dev/vfio nodes as files."""
    how = "tests/lab/guest/sysfscopy.py"
    if shutil.which("vfiowatch"):
        res = subprocess.run(["vfiowatch", "record", "sysfs", "--out", out],
                             capture_output=True, text=True, check=False)
        labio.say(f"vfiowatch record sysfs: rc={res.returncode} {res.stdout.strip()} "
                  f"{res.stderr.strip()[-500:]}")
        if res.returncode == 0:
            how = "vfiowatch record sysfs --out DIR"
    if how.startswith("tests/"):
        sysfscopy.copy(out)
    keep_empty_dirs(out)
    os.makedirs(out + "/dev/vfio", exist_ok=True)
    for name in os.listdir("/dev/vfio"):
        if not os.path.exists(f"{out}/dev/vfio/{name}"):
            open(f"{out}/dev/vfio/{name}", "wb").close()
    with open(OUT + "/sysfs-how.txt", "w") as fh:
        fh.write(how + "\n")
    return how


def main() -> int:
    os.makedirs(OUT + "/uevent")
    os.makedirs(OUT + "/netlink")
    os.makedirs(OUT + "/postmortem")
    kernel = os.uname().release
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rec = sriov.Recorder()
    monitors = {
        "udevadm-monitor-kernel-property.txt": ["udevadm", "monitor", "--kernel", "--property"],
        "udevadm-monitor-kernel.txt": ["udevadm", "monitor", "--kernel"],
        "ip-ts-monitor-link.txt": ["ip", "-ts", "monitor", "link"],
        "ip-monitor-link.txt": ["ip", "monitor", "link"],
    }
    procs = []
    for name, cmd in monitors.items():
        fh = open(f"{OUT}/postmortem/{name}", "wb")  # noqa: SIM115 (closed after the run)
        procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), fh))
    time.sleep(1.5)  # let the monitors subscribe before the first action

    phases: list[tuple[str, str, object]] = [
        ("pf-probe", "modprobe igb igbvf vfio-pci vfio_iommu_type1; ip link set <pf> up",
         sriov.setup),
        ("sriov-create", f"echo -n 2 > {PCI}/devices/{PF}/sriov_numvfs (igbvf loaded)",
         lambda: sriov.enable_vfs(2)),
        ("kata38-bind-vfio", f"Kata Go >=3.8 BindDevicetoVFIO({VF0}, igbvf)",
         lambda: sriov.kata38_bind(VF0)),
        ("snapshot", "", None),
        ("kata38-restore", f"Kata Go >=3.8 BindDevicetoHost({VF0}, igbvf)",
         lambda: sriov.kata38_restore(VF0, "igbvf")),
        ("clear-override", f"echo > {PCI}/devices/{VF0}/driver_override (newline clears it)",
         lambda: sriov.write(f"{PCI}/devices/{VF0}/driver_override", "\n")),
        ("kata30-bind-vfio", f"Kata Go 3.0-3.7 bind({VF0}): unbind, new_id, bind",
         lambda: sriov.kata30_bind(VF0)),
        ("kata30-restore", f"Kata Go 3.0-3.7 restore({VF0}): unbind, remove_id, bind igbvf",
         lambda: sriov.kata30_restore(VF0, "igbvf")),
        ("sriov-destroy", f"echo -n 0 > {PCI}/devices/{PF}/sriov_numvfs",
         lambda: sriov.enable_vfs(0)),
    ]
    summary = []
    for name, what, fn in phases:
        if fn is None:
            how = snapshot_sysfs(OUT + "/sysfs/sriov-lab")
            labio.say(f"sysfs copied by {how}; {VF0} on {sriov.driver_of(VF0)}, "
                      f"{VF1} on {sriov.driver_of(VF1)}")
            continue
        rec.take()
        first = len(sriov.ACTIONS)
        t0 = time.monotonic()
        fn()  # type: ignore[operator]
        rec.settle()
        took = time.monotonic() - t0
        records = rec.take()
        acts = sriov.ACTIONS[first:]
        header = [
            f"vfiowatch raw netlink dump, format 1: phase {name}",
            f"captured {started} in the QEMU SR-IOV lab (tests/lab, scenario capture)",
            f"guest kernel {kernel}; QEMU igb PF {PF} (8086:10c9), VFs 8086:10ca; intel-iommu",
            f"what: {what}",
            "writes (open O_WRONLY + one write, no newline, as Kata does):",
            *[f"  t_mono_ns={a.t_mono_ns} t_real_ns={a.t_real_ns} {a.path} <- {a.value!r}: "
              f"{a.result}" for a in acts],
            f"state after: {VF0} driver={sriov.driver_of(VF0) or '-'} "
            f"{VF1} driver={sriov.driver_of(VF1) or '-'}",
        ]
        for sock, sub in (("uevent", "uevent"), ("rtnl", "netlink")):
            sock_header = [*header, "socket: " + ("AF_NETLINK NETLINK_KOBJECT_UEVENT, group 1 (kernel)" if sock == "uevent" else "AF_NETLINK NETLINK_ROUTE, RTMGRP_LINK")]
            with open(f"{OUT}/{sub}/{name}.dump", "w") as fh:
                fh.write(sriov.format_dump(records, sock_header, sock))
        n_ue = sum(r.socket == "uevent" for r in records)
        summary.append(f"{name}: {len(acts)} writes, {n_ue} uevents, "
                       f"{len(records) - n_ue} rtnl datagrams, {took:.2f}s")
        labio.say(summary[-1])

    time.sleep(0.5)
    sriov.stop_monitors(procs)
    rec.close()
    with open(OUT + "/actions.log", "w") as fh:
        fh.write(f"# writes made by the capture scenario; guest kernel {kernel}, {started}\n")
        for a in sriov.ACTIONS:
            fh.write(f"{a.t_mono_ns} {a.t_real_ns} {a.path} {a.value!r} {a.result}\n")
    with open(OUT + "/summary.txt", "w") as fh:
        fh.write(f"kernel {kernel}\nstarted {started}\n" + "\n".join(summary) + "\n")
        fh.write(subprocess.run(["lspci", "-nn"], capture_output=True, text=True).stdout)
    labio.send_tree("capture.tar", OUT)
    return 0
