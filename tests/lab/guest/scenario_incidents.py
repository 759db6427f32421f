"""Incidents scenario: records, per postmortem incident set, what an operator's tools print.

For each incident of tests/fixtures/postmortem-incidents/ (its README says which Kata case each
one reproduces) the VF is moved by the real igbvf/vfio-pci drivers the way that case moves it,
while `udevadm monitor` and `ip monitor` run; `ps`, `lspci` (with and without -D, -vnnk, -nnk)
and `dmesg` (raw and -T) are taken when an operator would take them. The shim and the VMM are
the lab's stand-ins under their real names (kata.py): `ps` shows them as Kata's processes are.
The writes are made from here, each stamped with both clocks in the incident's actions.log
(with `# mark` lines for what the stand-ins did), so the host can place Kata's log lines next to
the real writes they describe (tests/fixtures/postmortem-incidents/make_incidents.py).

Sends one tar (``incidents.tar``): one folder per incident plus guest.txt (kernel, boot time).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import threading
import time
from collections.abc import Callable

import kata
import labio
import sriov
from sriov import PCI, VF0, VF1

OUT = "/tmp/incidents"


class Incident:
    """One incident's folder: monitors running while it plays, listings on demand."""

    def __init__(self, name: str, monitors: dict[str, list[str]]) -> None:
        self.name = name
        self.dir = f"{OUT}/{name}"
        os.makedirs(self.dir)
        self.first_action = len(sriov.ACTIONS)
        self.marks: list[str] = []
        self.t0_mono = time.monotonic()
        self.procs = []
        for fname, cmd in monitors.items():
            fh = open(f"{self.dir}/{fname}", "wb")  # noqa: SIM115 (closed in stop)
            self.procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), fh))
        time.sleep(1.5)  # let the monitors subscribe before the first action

    def mark(self, what: str) -> None:
        self.marks.append(f"# mark {time.monotonic_ns()} {time.time_ns()} {what}")
        labio.say(f"{self.name}: {what}")

    def run(self, fname: str, *cmd: str) -> None:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        with open(f"{self.dir}/{fname}", "w") as fh:
            fh.write(out.stdout + out.stderr)
        self.mark(f"took {fname}: {' '.join(cmd)}")

    def dmesg(self, raw: str = "dmesg.txt", human: str | None = None) -> None:
        """The kernel lines since the incident began: `dmesg` and `dmesg -T` slices."""
        lines = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
        keep = [ln for ln in lines if _stamp(ln) >= self.t0_mono]
        with open(f"{self.dir}/{raw}", "w") as fh:
            fh.write("".join(ln + "\n" for ln in keep))
        if human:
            t_lines = subprocess.run(["dmesg", "-T"], capture_output=True, text=True).stdout
            tail = t_lines.splitlines()[len(lines) - len(keep):] if keep else []
            with open(f"{self.dir}/{human}", "w") as fh:
                fh.write("".join(ln + "\n" for ln in tail))
        self.mark(f"took {raw}" + (f" and {human}" if human else ""))

    def stop_monitors(self) -> None:
        time.sleep(0.5)
        sriov.stop_monitors(self.procs)
        self.procs = []
        self.mark("monitors stopped")

    def close(self) -> None:
        if self.procs:
            self.stop_monitors()
        with open(f"{self.dir}/actions.log", "w") as fh:
            fh.write(f"# {self.name}: writes (t_mono_ns t_real_ns path value result) and marks\n")
            for a in sriov.ACTIONS[self.first_action:]:
                fh.write(f"{a.t_mono_ns} {a.t_real_ns} {a.path} {a.value!r} {a.result}\n")
            fh.write("".join(m + "\n" for m in self.marks))


def _stamp(line: str) -> float:
    if line.startswith("[") and "]" in line:
        try:
            return float(line[1:line.index("]")].strip())
        except ValueError:
            return -1.0
    return -1.0


UDEV_PROP = ["udevadm", "monitor", "--kernel", "--property"]
UDEV = ["udevadm", "monitor", "--kernel"]
IPTS = ["ip", "-ts", "monitor", "link"]
IP = ["ip", "monitor", "link"]


def reset_vf(bdf: str = VF0) -> None:
    """Back on igbvf with the override cleared (between incidents, no monitor running)."""
    drv = sriov.driver_of(bdf)
    if drv and drv != "igbvf":
        sriov.write(f"{PCI}/devices/{bdf}/driver/unbind", bdf)
    with open(f"{PCI}/devices/{bdf}/driver_override") as fh:
        if fh.read().strip() != "(null)":
            sriov.write(f"{PCI}/devices/{bdf}/driver_override", "\n")
    if sriov.driver_of(bdf) != "igbvf":
        sriov.write(f"{PCI}/drivers/igbvf/bind", bdf)
    sriov.wait_for(lambda: sriov.driver_of(bdf) == "igbvf", 5)


def kata_rs_restore(bdf: str, host_driver: str) -> None:
    """runtime-rs bind_device_to_host: override, vfio-pci's own unbind, drivers_probe."""
    sriov.write(f"{PCI}/devices/{bdf}/driver_override", host_driver)
    sriov.write(f"{PCI}/drivers/vfio-pci/unbind", bdf)
    sriov.write(f"{PCI}/drivers_probe", bdf)


def _no_port_move(name: str, sid_n: int, monitors: dict[str, list[str]],
                  bind: Callable[[str], None], restore: Callable[[str, str], None],
                  restore_mark: str, lspci_flags: str, *, ps: bool = False,
                  dmesg: bool = False) -> None:
    """A #10162 incident: `bind` moves the VF to vfio-pci for a sandbox with no-port, QEMU
    refuses the bus, `restore` gives it back to igbvf; then lspci `lspci_flags` (and, when
    asked, `ps -ef` before the move and `dmesg` after)."""
    sid = kata.sandbox_id(sid_n)
    inc = Incident(name, monitors)
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, "")
    inc.mark(f"shim pid {shim.pid} sandbox {sid}")
    if ps:
        inc.run("ps-ef.txt", "ps", "-ef")
    bind(VF0)
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "vfio-pci", 5)
    inc.mark("qemu started and exited: Bus not found")
    time.sleep(1.2)
    inc.mark(restore_mark)
    restore(VF0, "igbvf")
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "igbvf", 5)
    time.sleep(1.0)
    inc.stop_monitors()
    kata.stop(shim)
    kata.remove_sandbox(sid)
    inc.run(f"lspci-{lspci_flags.lstrip('-')}-after.txt", "lspci", lspci_flags)
    if dmesg:
        inc.dmesg("dmesg.txt")
    inc.close()


ROLLBACK = "rollback: Removing network after failure in createSandbox"


def go38_no_port() -> None:
    """#10162 with Kata Go 3.8: bind with no-port, QEMU refuses the bus, rollback restores."""
    _no_port_move("go38-no-port", 0x21, {"udevadm-monitor-property.txt": UDEV_PROP,
                                         "ip-monitor.txt": IP},
                  sriov.kata38_bind, sriov.kata38_restore, ROLLBACK, "-nnk", ps=True, dmesg=True)


def go30_legacy_no_port() -> None:
    """#10162 with Kata Go 3.3-3.7: the new_id/bind sequence, then the rollback."""
    _no_port_move("go30-legacy-no-port", 0x22, {"udevadm-monitor.txt": UDEV,
                                                "ip-ts-monitor.txt": IPTS},
                  sriov.kata30_bind, sriov.kata30_restore, ROLLBACK, "-vnnk")


def rs_no_port() -> None:
    """runtime-rs (no PR #10210 check at all): bind with no-port, QEMU fails, restore (its
    bind_device_to_vfio makes the same three writes as Go 3.8)."""
    _no_port_move("rs-no-port", 0x23, {"udevadm-monitor-property.txt": UDEV_PROP,
                                       "ip-ts-monitor.txt": IPTS},
                  sriov.kata38_bind, kata_rs_restore, "restore: bind_device_to_host", "-Dnnk")


def go32_port_not_set() -> None:
    """#9014 / PR #13790: Kata 3.2 binds (new_id), fails on the port, never restores."""
    sid = kata.sandbox_id(0x24)
    inc = Incident("go32-port-not-set-stranded", {"udevadm-monitor-property.txt": UDEV_PROP})
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, "")
    inc.mark(f"shim pid {shim.pid} sandbox {sid}")
    sriov.kata30_bind(VF0)
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "vfio-pci", 5)
    inc.mark("attach failed: port is not set; sandbox creation failed")
    time.sleep(1.0)
    kata.stop(shim)
    kata.remove_sandbox(sid)
    inc.mark("shim exited")
    time.sleep(1.0)
    inc.stop_monitors()
    inc.run("lspci-vnnk-after.txt", "lspci", "-vnnk")
    inc.close()


def go40_stuck() -> None:
    """#13837: teardown restores the VF while QEMU still holds it; the unbind stalls until QEMU
    is gone and drivers_probe is never written: the VF is left driverless, override igbvf."""
    sid = kata.sandbox_id(0x25)
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, "")
    sriov.kata38_bind(VF0)  # the pod was created before the capture began
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "vfio-pci", 5)
    qemu = kata.start_vmm(sid, VF0)
    kata.wait_steps_done(qemu)
    inc = Incident("go40-stuck-unbound", {"udevadm-monitor-property.txt": UDEV_PROP,
                                          "ip-ts-monitor.txt": IPTS})
    inc.first_action = len(sriov.ACTIONS)
    inc.mark(f"shim pid {shim.pid} sandbox {sid}; qemu pid {qemu.pid} holds {VF0}")
    inc.run("ps-aux-before.txt", "ps", "aux")
    inc.mark("teardown: TaskExit published; BindDevicetoHost starts before QEMU is gone")
    sriov.write(f"{PCI}/devices/{VF0}/driver_override", "igbvf")
    unbind = threading.Thread(target=sriov.write, args=(f"{PCI}/devices/{VF0}/driver/unbind", VF0))
    unbind.start()
    time.sleep(3.0)  # the unbind waits for the holder: the kernel asks it to release the device
    inc.mark(f"qemu pid {qemu.pid} exits")
    kata.stop(qemu)
    unbind.join(30)
    inc.mark("unbind returned; the shim is killed before drivers_probe")
    kata.stop(shim)
    kata.remove_sandbox(sid)
    time.sleep(1.0)
    inc.stop_monitors()
    inc.run("lspci-vnnk-after.txt", "lspci", "-vnnk")
    inc.dmesg("dmesg.txt", "dmesg-T.txt")
    inc.close()
    sriov.write(f"{PCI}/drivers_probe", VF0)  # back on igbvf (override igbvf) for what follows


def go38_root_port() -> None:
    """Benign: the same Go 3.8 move with cold_plug_vfio = root-port; QEMU holds the VF."""
    sid = kata.sandbox_id(0x26)
    inc = Incident("go38-root-port-running", {"udevadm-monitor-property.txt": UDEV_PROP,
                                              "ip-ts-monitor.txt": IPTS})
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, "")
    inc.mark(f"shim pid {shim.pid} sandbox {sid}")
    sriov.kata38_bind(VF0)
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "vfio-pci", 5)
    qemu = kata.start_vmm(sid, VF0)
    kata.wait_steps_done(qemu)
    inc.mark(f"qemu pid {qemu.pid} holds {VF0}: VM started")
    time.sleep(1.5)
    inc.run("ps-ef.txt", "ps", "-ef")
    inc.stop_monitors()
    inc.run("lspci-nnk-after.txt", "lspci", "-nnk")
    inc.close()
    kata.stop(qemu)
    kata.stop(shim)
    kata.remove_sandbox(sid)


def driverctl_prebound() -> None:
    """Benign: VF1 bound to vfio-pci by driverctl long before; a listing taken now."""
    sriov.write(f"{PCI}/devices/{VF1}/driver_override", "vfio-pci")
    sriov.write(f"{PCI}/devices/{VF1}/driver/unbind", VF1)
    sriov.write(f"{PCI}/drivers_probe", VF1)
    sriov.wait_for(lambda: sriov.driver_of(VF1) == "vfio-pci", 5)
    inc = Incident("driverctl-prebound", {})
    inc.first_action = len(sriov.ACTIONS)
    inc.run("lspci-vnnk.txt", "lspci", "-vnnk")
    inc.close()
    reset_vf(VF1)


def host_driver_flapping() -> None:
    """Benign: the VF's own driver is unbound and bound again three times (a driver reload)."""
    inc = Incident("host-driver-flapping", {"udevadm-monitor-property.txt": UDEV_PROP,
                                            "ip-ts-monitor.txt": IPTS})
    for _ in range(3):
        sriov.write(f"{PCI}/drivers/igbvf/unbind", VF1)
        time.sleep(0.5)
        sriov.write(f"{PCI}/drivers/igbvf/bind", VF1)
        sriov.wait_for(lambda: sriov.driver_of(VF1) == "igbvf", 5)
        time.sleep(1.0)
    inc.stop_monitors()
    inc.run("lspci-nnk-after.txt", "lspci", "-nnk")
    inc.close()


INCIDENTS: list[Callable[[], None]] = [
    go38_no_port, go30_legacy_no_port, rs_no_port, go32_port_not_set, go40_stuck,
    go38_root_port, driverctl_prebound, host_driver_flapping,
]


def main() -> int:
    os.makedirs(OUT)
    kernel = os.uname().release
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    kata.install_binaries()
    sriov.setup()
    sriov.enable_vfs(2)
    time.sleep(1.0)
    for fn in INCIDENTS:
        reset_vf(VF0)
        reset_vf(VF1)
        time.sleep(0.5)
        fn()
    with open("/proc/stat") as fh:
        btime = next(ln.split()[1] for ln in fh if ln.startswith("btime "))
    with open(f"{OUT}/guest.txt", "w") as fh:
        fh.write(f"kernel {kernel}\nstarted {started}\nbtime {btime}\nhostname "
                 f"{os.uname().nodename}\n")
    labio.send_tree("incidents.tar", OUT)
    return 0
