"""Re-captures the lab's real-kernel fixtures: boots the ``capture`` scenario and unpacks into
tests/fixtures/ (uevent/, netlink/, postmortem/, sysfs/sriov-lab/).

Usage: ``python3 -m tests.lab.capture_fixtures [--fixtures DIR] [--demo]``. Overwrites the
lab-made files only; hand-written READMEs are kept, the sysfs file list is regenerated.
With ``--demo`` it instead boots agent scenario 1 (Kata >=3.8 move with cold_plug_vfio=no-port)
and keeps its journal as diag/data/demo.jsonl (the bundled demo incident, `vfiowatch demo`) and
tests/fixtures/journals/lab-scenario1.jsonl. With ``--incidents`` it boots the ``incidents``
scenario and unpacks its real captures (udevadm, ip monitor, ps, lspci, dmesg, actions.log) into
tests/fixtures/postmortem-incidents/lab/<incident>/, from which make_incidents.py builds the
incident sets.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tarfile
import time
from pathlib import Path

from tests.lab import labbuild as build
from tests.lab import labvm as vm

SYSFS_README = """# sysfs/sriov-lab: the scanner's view of the QEMU SR-IOV lab guest

Captured by `python3 -m tests.lab.capture_fixtures` (scenario `capture`; the copy was made
inside the guest by `{how}`) on guest kernel {kernel}, {started}.
Use it as a root: `--root tests/fixtures/sysfs/sriov-lab`.

State at capture time (right after Kata Go >=3.8's BindDevicetoVFIO of 0000:01:10.0):
- PF 0000:01:00.0 [8086:10c9] on igb, netdev eth0, sriov_numvfs=2 (sriov_totalvfs=7);
- VF 0000:01:10.0 [8086:10ca] on vfio-pci, driver_override=vfio-pci, no netdev,
  vfio-dev/vfio0, IOMMU group with /dev/vfio/<N>;
- VF 0000:01:10.2 [8086:10ca] on igbvf, netdev eth2;
- every other guest PCI device (q35 host bridge, virtio-blk, PCIe root port, ICH9 parts).

Only what the scanner reads was copied: per /sys/bus/pci/devices/<bdf> link its target folder's
id/class/driver_override/numa/enable/sriov attributes, the driver, iommu_group, physfn and
virtfnN symlinks (relative targets as the kernel gives them; every target exists in the copy),
net/<ifname>/ attributes, vfio-dev/; the driver folders, /sys/kernel/iommu_groups/<N>/devices,
/sys/class/iommu and /sys/class/net links. /dev/vfio/<group> and /dev/vfio/vfio are EMPTY
REGULAR FILES standing for the character devices. Folders the copier leaves empty (git keeps
no empty folder) got their real sysfs contents added by the lab: a driver folder its write-only
control files (bind, unbind, new_id, remove_id, uevent) as EMPTY files, any other its uevent.
The exact list is below.

## Files
```
{files}
```
"""


def demo(guest: build.Guest, fx: Path, t0: float) -> int:
    """Boots agent scenario 1 and keeps its journal as the demo incident and a fixture."""
    res = vm.boot(guest, "agent", build.DEFAULT_CACHE / "runs" / "demo", extra_append="lab.only=1",
                  timeout=1800)
    body = res.payloads.get("journal-g0.jsonl", b"")  # with lab.only=1: scenario 1 alone
    if not res.ok or not body or b"vfio-bind-coldplug-disabled" not in body:
        print(res.console[-3000:])
        print(res.payloads.get("agent-g0.log", b"").decode()[-3000:])
        print("no finding in scenario 1's journal: demo not written")
        return 1
    for dst in (build.REPO / "diag" / "data" / "demo.jsonl", fx / "journals" / "lab-scenario1.jsonl"):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(body)
        print(f"wrote {dst} ({len(body.splitlines())} records)")
    print(res.payloads.get("timeline-1.txt", b"").decode())
    print(f"done in {time.monotonic() - t0:.1f}s (boot {res.seconds:.1f}s)")
    return 0


def incidents(guest: build.Guest, fx: Path, t0: float) -> int:
    """Boots the incidents scenario and unpacks its captures under postmortem-incidents/lab/."""
    res = vm.boot(guest, "incidents", build.DEFAULT_CACHE / "runs" / "incidents", timeout=900)
    if not res.ok or "incidents.tar" not in res.payloads:
        print(res.console[-4000:])
        print(res.payloads.get("error", b"").decode())
        return 1
    dst = fx / "postmortem-incidents" / "lab"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(res.payloads["incidents.tar"])) as tar:
        tar.extractall(dst)
    print((dst / "guest.txt").read_text())
    print(f"captures written under {dst} in {time.monotonic() - t0:.1f}s (boot {res.seconds:.1f}s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=build.REPO / "tests" / "fixtures")
    ap.add_argument("--demo", action="store_true", help="record the demo journal instead")
    ap.add_argument("--incidents", action="store_true",
                    help="record the postmortem incident captures instead")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    guest = build.build()
    if args.demo:
        return demo(guest, args.fixtures, t0)
    if args.incidents:
        return incidents(guest, args.fixtures, t0)
    res = vm.boot(guest, "capture", build.DEFAULT_CACHE / "runs" / "capture")
    if not res.ok or "capture.tar" not in res.payloads:
        print(res.console[-4000:])
        print(res.payloads.get("error", b"").decode())
        return 1
    fx: Path = args.fixtures
    with tarfile.open(fileobj=io.BytesIO(res.payloads["capture.tar"])) as tar:
        tmp = build.DEFAULT_CACHE / "runs" / "capture" / "unpacked"
        shutil.rmtree(tmp, ignore_errors=True)
        tar.extractall(tmp)
    for sub in ("uevent", "netlink", "postmortem"):
        (fx / sub).mkdir(parents=True, exist_ok=True)
        for f in (tmp / sub).iterdir():
            shutil.copy2(f, fx / sub / f.name)
    shutil.copy2(tmp / "actions.log", fx / "postmortem" / "lab-actions.log")
    dst = fx / "sysfs" / "sriov-lab"
    readme = fx / "sysfs" / "sriov-lab.README.md"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(tmp / "sysfs" / "sriov-lab", dst, symlinks=True)
    summary = (tmp / "summary.txt").read_text().splitlines()
    kernel = summary[0].removeprefix("kernel ")
    started = summary[1].removeprefix("started ")
    how = (tmp / "sysfs-how.txt").read_text().strip()
    files = "\n".join(sorted(
        str(p.relative_to(dst)) + (" -> " + str(p.readlink()) if p.is_symlink() else "")
        for p in dst.rglob("*") if p.is_symlink() or p.is_file()))
    readme.write_text(SYSFS_README.format(kernel=kernel, started=started, files=files, how=how))
    print("\n".join(summary))
    print(f"fixtures written under {fx} in {time.monotonic() - t0:.1f}s (boot {res.seconds:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
