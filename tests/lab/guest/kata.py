"""Guest helpers: a realistic Kata sandbox layout (kata-facts §1, §3) and the actors that move VFs.

The layout is what a host running containerd + Kata Go (kata-deploy, /opt/kata) has while a
sandbox is being created: the shipped configuration (cold_plug_vfio chosen per scenario), the
containerd bundle with the CRI annotations, /run/vc/sbs/<sid>/ and, once a VMM holds the VF,
/run/vc/vm/<sid>/pid. Actors are real processes with the real names: the shim is an executable
called containerd-shim-kata-v2 (comm "containerd-shim"), the VMM holder qemu-system-x86_64.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

KATA_BASE = "/opt/kata"
DEFAULTS = f"{KATA_BASE}/share/defaults/kata-containers"
BUNDLES = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
SHIM = f"{KATA_BASE}/bin/containerd-shim-kata-v2"
QEMU = f"{KATA_BASE}/bin/qemu-system-x86_64"
DRIVERCTL = "/usr/sbin/driverctl"

CONFIG_QEMU = """\
# Kata Containers configuration for QEMU (as shipped by kata-deploy, trimmed), lab copy.
[hypervisor.qemu]
path = "/opt/kata/bin/qemu-system-x86_64"
kernel = "/opt/kata/share/kata-containers/vmlinux.container"
image = "/opt/kata/share/kata-containers/kata-containers.img"
machine_type = "q35"
enable_annotations = ["enable_iommu", "kernel_params", "kernel_verity_params"]
default_vcpus = 1
default_memory = 2048
disable_vhost_net = false
# VFIO cold/hot plug of physical endpoints (SR-IOV VFs).
hot_plug_vfio = "no-port"
cold_plug_vfio = "{cold_plug}"
pcie_root_port = {root_ports}

[agent.kata]
dial_timeout = 45

[runtime]
enable_debug = false
internetworking_model = "tcfilter"
disable_guest_seccomp = true
sandbox_cgroup_only = false
vfio_mode = "guest-kernel"
"""


def config_text(cold_plug: str) -> str:
    """The shipped-style configuration with cold_plug_vfio set (two root ports for root-port);
    also what the postmortem incident sets attach (make_incidents.py)."""
    return CONFIG_QEMU.format(cold_plug=cold_plug, root_ports=2 if cold_plug == "root-port" else 0)


def install_config(cold_plug: str) -> bool:
    """Writes the shipped-style configuration with cold_plug_vfio set; True if it changed."""
    os.makedirs(f"{DEFAULTS}/config.d", exist_ok=True)
    path = f"{DEFAULTS}/configuration-qemu.toml"
    text = config_text(cold_plug)
    if os.path.exists(path) and open(path).read() == text:  # noqa: SIM115
        return False
    with open(path, "w") as fh:
        fh.write(text)
    link = f"{DEFAULTS}/configuration.toml"
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink("configuration-qemu.toml", link)
    return True


def install_binaries() -> None:
    """Puts the actor executables (tests/lab/guest/c/) at the paths the real ones have."""
    os.makedirs(f"{KATA_BASE}/bin", exist_ok=True)
    for dst, src in ((SHIM, "actor"), (QEMU, "vfioholder"),
                     ("/usr/local/bin/sriov-network-config-daemon", "actor"),
                     (DRIVERCTL, "actor")):
        if os.path.lexists(dst):
            os.unlink(dst)
        shutil.copy(f"/lab/bin/{src}", dst)
        os.chmod(dst, 0o755)


def sandbox_id(n: int) -> str:
    return (f"{n:02x}" + "5f1c2e8a9b7d4c3e2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f")[:64]


def create_sandbox(sid: str, *, pod: str = "sriov-pod", namespace: str = "default") -> str:
    """Creates the containerd bundle (config.json with CRI annotations) and /run/vc/sbs/<sid>."""
    bundle = f"{BUNDLES}/{sid}"
    os.makedirs(f"{bundle}/rootfs", exist_ok=True)
    spec = {
        "ociVersion": "1.1.0",
        "process": {"args": ["/pause"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": pod,
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": sid,
            "io.kubernetes.cri.sandbox-name": pod,
            "io.kubernetes.cri.sandbox-namespace": namespace,
            "io.kubernetes.cri.sandbox-uid": "9d2b6a3e-1c4f-4e8a-b7d5-3f2a1c0e9b8d",
            "io.kubernetes.cri.sandbox-log-directory": f"/var/log/pods/{namespace}_{pod}_9d2b6a3e",
            "k8s.v1.cni.cncf.io/networks": "sriov-net1",
        },
        "linux": {"namespaces": [{"type": "network", "path": f"/var/run/netns/cni-{sid[:8]}"}]},
    }
    with open(f"{bundle}/config.json", "w") as fh:
        json.dump(spec, fh, indent=2)
    with open(f"{bundle}/address", "w") as fh:
        fh.write(f"unix:///run/containerd/s/{sid[:32]}")
    with open(f"{bundle}/shim-binary-path", "w") as fh:
        fh.write(SHIM)
    os.makedirs(f"/run/vc/sbs/{sid}", mode=0o700, exist_ok=True)
    return bundle


def write_vm_state(sid: str, bdf: str, qemu_pid: int, cold_plug: str, group: int) -> None:
    """What Kata Go writes once the VM runs: /run/vc/vm/<sid>/pid and the sandbox persist.json
    (kata-facts §3.1: CapitalCase keys; ColdPlugVFIO is not really saved, so it stays "")."""
    os.makedirs(f"/run/vc/vm/{sid}", exist_ok=True)
    with open(f"/run/vc/vm/{sid}/pid", "w") as fh:
        fh.write(str(qemu_pid))
    bus = {"root-port": "rp0", "switch-port": "swdp0", "bridge-port": "bp0"}.get(cold_plug, "")
    persist = {
        "PersistVersion": 2,
        "SandboxContainer": sid,
        "State": {"State": "running"},
        "HypervisorState": {"Type": "qemu", "UUID": "a1b2c3d4-0000-4000-8000-000000000001",
                            "Pid": qemu_pid, "HotPlugVFIO": "", "ColdPlugVFIO": "",
                            "PCIeRootPort": 0, "PCIeSwitchPort": 0},
        "Network": {"NetworkID": f"/var/run/netns/cni-{sid[:8]}", "NetworkCreated": False,
                    "Endpoints": [{"Type": "physical", "Physical": {
                        "BDF": bdf, "Driver": "igbvf", "VendorDeviceID": "0x8086 0x10ca"}}]},
        "Devices": [{"ID": f"vfio-{bdf}", "Type": "vfio", "DevType": "c", "RefCount": 1,
                     "AttachCount": 1, "Major": 243, "Minor": 0, "ColdPlug": True,
                     "VFIODevs": [{"ID": f"vfio-{bdf}", "BDF": bdf,
                                   "SysfsDev": f"/sys/bus/pci/devices/{bdf}",
                                   "DevfsDev": f"/dev/vfio/{group}", "VendorID": "0x8086",
                                   "DeviceID": "0x10ca", "Class": "0x020000", "Bus": bus,
                                   "GuestPciPath": {}, "Type": 1, "IsPCIe": True,
                                   "Port": cold_plug}]}],
        "Config": {"HypervisorType": "qemu",
                   "HypervisorConfig": {"HotPlugVFIO": "", "ColdPlugVFIO": ""},
                   "ContainerConfigs": [{"ID": sid, "Annotations": {
                       "io.kubernetes.cri.container-type": "sandbox",
                       "io.kubernetes.cri.sandbox-id": sid,
                       "io.kubernetes.cri.sandbox-name": "sriov-pod",
                       "io.kubernetes.cri.sandbox-namespace": "default",
                       "io.katacontainers.pkg.oci.bundle_path": f"{BUNDLES}/{sid}"}}]},
    }
    path = f"/run/vc/sbs/{sid}/persist.json"
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(persist, fh)
    os.chmod(path, 0o600)


def start_vmm(sid: str, bdf: str) -> subprocess.Popen[bytes]:
    """Starts the VMM stand-in the way Kata starts QEMU for this sandbox (name, vfio device)."""
    return start_actor(QEMU, ["-name", f"sandbox-{sid}", "-uuid",
                              "a1b2c3d4-0000-4000-8000-000000000001", "-machine", "q35,accel=kvm",
                              "-device", f"vfio-pci,host={bdf},id=vfio-net0,bus=rp0",
                              "-pidfile", f"/run/vc/vm/{sid}/pid"], "")


def remove_sandbox(sid: str) -> None:
    for d in (f"{BUNDLES}/{sid}", f"/run/vc/sbs/{sid}", f"/run/vc/vm/{sid}"):
        shutil.rmtree(d, ignore_errors=True)


def start_shim(sid: str, steps: str, *, name: str = SHIM) -> subprocess.Popen[bytes]:
    """Starts the shim actor (as containerd does: cwd = bundle, `-id <sid>`); it plays `steps`.

    steps: ';'-separated `kata38-bind:<bdf>`, `kata38-restore:<bdf>:<drv>`, `kata30-bind:<bdf>`,
    `kata30-restore:<bdf>:<drv>`, `unbind:<bdf>`, `override:<bdf>:<drv>`, `sleep:<s>`.
    The actor stays alive after its steps until stopped (a real shim lives as long as its pod).
    """
    cmd = [name, "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
           "-publish-binary", "/usr/bin/containerd", "-id", sid]
    env = dict(os.environ, LAB_STEPS=steps)
    cwd = f"{BUNDLES}/{sid}" if os.path.isdir(f"{BUNDLES}/{sid}") else "/"
    return subprocess.Popen(cmd, cwd=cwd, env=env)


def start_actor(exe: str, args: list[str], steps: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([exe, *args], env=dict(os.environ, LAB_STEPS=steps))


def wait_steps_done(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Waits until the actor wrote its done marker (/run/lab-actor-<pid>.done)."""
    marker = f"/run/lab-actor-{proc.pid}.done"
    end = time.monotonic() + timeout
    while time.monotonic() < end and not os.path.exists(marker):
        if proc.poll() is not None:
            raise RuntimeError(f"actor {proc.args} exited {proc.returncode}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
