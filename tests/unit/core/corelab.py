"""Builds core event streams from the lab's REAL recordings (tests/fixtures/{uevent,netlink}).

Every kernel event comes from a recorded datagram, decoded by the sources' own pure decoders
(`diag.sources.uevent.decode_uevent` completed by its `DeviceTracker`, `diag.sources.links.
decode_rtnl`), stamped with the recorded `t_real_ns`. The writes come from each dump's header
(path, value, result and both clocks, as the capture made them) and are attributed to an actor
the test chooses, as the eBPF source would. The starting inventory is the scanner's view of the
lab guest (tests/fixtures/sysfs/sriov-lab, taken after the Kata 3.8 bind), turned back to
"VF 0000:01:10.0 on igbvf with eth1" for scenarios that start before the bind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from diag import events as ev
from diag.common.paths import HostPaths
from diag.core.correlator import Correlator
from diag.core.thresholds import CoreConfig
from diag.events import replace
from diag.sources import sysfs
from diag.sources.rtnl import decode_rtnl
from diag.sources.uevent.decode import DeviceTracker, decode_uevent
from tests.fixtures.dumps import dump_path, load_dump

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

VF = "0000:01:10.0"
VF2 = "0000:01:10.2"
PF = "0000:01:00.0"
SID = "5d1b2c3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"
HOST_NS = ev.NetnsRef(inode=4026531840, is_host=True)
POD_NS = ev.NetnsRef(inode=4026532999, name="cni-4f1c2d3e", sandbox_id=SID, pod="web-0",
                     pod_namespace="shop")

KATA_SHIM = ev.Process(pid=4242, ppid=1, comm="containerd-shim",
                       exe="/opt/kata/bin/containerd-shim-kata-v2",
                       cmdline="/opt/kata/bin/containerd-shim-kata-v2 -namespace k8s.io",
                       kata_runtime="go", sandbox_id=SID)
KATA_SHIM_COMM_ONLY = ev.Process(pid=4243, comm="containerd-shim")
STRANGER = ev.Process(pid=777, ppid=1, comm="python3", exe="/usr/bin/python3.11",
                      ancestry=("bash", "sshd"))
OPERATOR = ev.Process(pid=900, comm="sriov-network-c",
                      exe="/usr/bin/sriov-network-config-daemon")

PHASES = ("pf-probe", "sriov-create", "kata38-bind-vfio", "kata38-restore", "clear-override",
          "kata30-bind-vfio", "kata30-restore", "sriov-destroy")
ERRNO = {"EBUSY": 16, "ENODEV": 19, "EINVAL": 22, "ENOENT": 2, "EEXIST": 17}
_WRITE = re.compile(r"^#\s+t_mono_ns=(\d+) t_real_ns=(\d+) (\S+) <- '(.*)': (\S+)$")
_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def lab_devices(*, vf_driver: str | None = "igbvf") -> tuple[ev.PciDevice, ...]:
    """The lab guest's PCI devices as the scanner read them; VF 01:10.0 set to `vf_driver`
    (the fixture was taken with it on vfio-pci)."""
    devs = sysfs.scan(HostPaths.at(FIXTURES / "sysfs" / "sriov-lab"), names=False)
    out = []
    for d in devs:
        if d.bdf == VF and vf_driver != "vfio-pci":
            d = replace(d, driver=vf_driver, driver_override=None,
                        netdevs=("eth1",) if vf_driver == "igbvf" else (),
                        vfio_group_path=None)
        out.append(d)
    return tuple(out)


def inventory(ts_ns: int, *, vf_driver: str | None = "igbvf") -> ev.InventoryObserved:
    return ev.InventoryObserved(ts_ns=ts_ns, source="sysfs", devices=lab_devices(vf_driver=vf_driver))


def writes(phase: str) -> list[tuple[int, str, str, str]]:
    """(t_real_ns, path, value, result) of every write the capture made in `phase`."""
    out = []
    for line in dump_path("uevent", phase).read_text().splitlines():
        m = _WRITE.match(line)
        if m:
            out.append((int(m.group(2)), m.group(3), m.group(4), m.group(5)))
    return out


def write_event(ts_ns: int, path: str, value: str, result: str,
                actor: ev.Process) -> ev.SysfsWriteObserved:
    """The SysfsWriteObserved the eBPF source would emit for one recorded write."""
    parts = path.split("/")
    control = parts[-1]
    bdf = None
    driver = None
    if "devices" in parts:
        bdf = parts[parts.index("devices") + 1]
    if "drivers" in parts and parts.index("drivers") + 1 < len(parts) - 1:
        driver = parts[parts.index("drivers") + 1]
    if bdf is None and _BDF.match(value):
        bdf = value
    if control == "driver_override":
        driver = value.strip() or None
    res = len(value) if result == "ok" else -ERRNO.get(result, 1)
    return ev.SysfsWriteObserved(ts_ns=ts_ns, source="ebpf", actor=actor, path=path,
                                 control=control, value=value, bdf=bdf, driver=driver,
                                 result=res, mode="kprobe")


def phase_events(phase: str, tracker: DeviceTracker, *, actor: ev.Process | None = None,
                 netns: ev.NetnsRef = HOST_NS, link_delay_ns: int = 0) -> list[ev.Event]:
    """One recorded phase as the core would get it: uevents (completed by the tracker), link
    events (in `netns`, shifted by `link_delay_ns` to replay the other socket order) and,
    when `actor` is given, the writes attributed to it; sorted by time like the merge window."""
    out: list[ev.Event] = []
    for r in load_dump(dump_path("uevent", phase)):
        e = decode_uevent(r.data, r.t_real_ns)
        if e is not None:
            out.append(e)
    for r in load_dump(dump_path("netlink", phase)):
        for e in decode_rtnl(r.data, r.t_real_ns + link_delay_ns, netns):
            out.append(e)
    if actor is not None:
        for ts, path, value, result in writes(phase):
            out.append(write_event(ts, path, value, result, actor))
    out.sort(key=lambda e: e.ts_ns)
    return [tracker.apply(e) for e in out]


def tracker_for(inv: ev.InventoryObserved) -> DeviceTracker:
    return DeviceTracker(inv.devices)


def sandbox(ts_ns: int, *, cold_plug: str = "no-port", vfs: tuple[str, ...] = (VF,),
            origin: str = "file:/opt/kata/share/defaults/kata-containers/configuration-qemu.toml",
            runtime: str = "go", state_file: str | None = None) -> ev.SandboxStarted:
    return ev.SandboxStarted(
        ts_ns=ts_ns, source="kata", sandbox_id=SID, runtime=runtime, handler="kata-qemu",
        pod="web-0", pod_namespace="shop", pod_uid="6b0c1d2e", netns=POD_NS, shim_pid=4242,
        cold_plug_vfio=cold_plug, cold_plug_origin=origin,
        pcie_root_port=1 if cold_plug == "root-port" else 0,
        vfs=tuple(ev.SandboxVf(bdf=b, host_driver="igbvf") for b in vfs), state_file=state_file,
    )


def kata_config(ts_ns: int, *, cold_plug: str = "no-port", handler: str = "kata-qemu",
                runtime: str = "go", **kw: object) -> ev.KataConfigLoaded:
    kw.setdefault("pcie_root_port", 1 if cold_plug == "root-port" else 0)
    cfg = ev.KataConfig(
        handler=handler, runtime=runtime,
        path="/opt/kata/share/defaults/kata-containers/configuration-qemu.toml",
        cold_plug_vfio=cold_plug, machine_type="q35", **kw,  # type: ignore[arg-type]
    )
    return ev.KataConfigLoaded(ts_ns=ts_ns, source="kata", config=cfg)


def start_ns() -> int:
    """A time just before the first recorded event (inventory and config go there)."""
    return min(r.t_real_ns for r in load_dump(dump_path("uevent", "kata38-bind-vfio"))) - 1_000_000_000


def tick(ts_ns: int) -> ev.ClockTicked:
    return ev.ClockTicked(ts_ns=ts_ns, source="runtime")


def run(events: Iterable[ev.Event], config: CoreConfig | None = None,
        until_ns: int | None = None) -> tuple[Correlator, list[ev.Finding]]:
    """Feed every event, then let time pass to `until_ns`; return the correlator and every
    finding transition in order."""
    c = Correlator(config)
    out: list[ev.Finding] = []
    for e in events:
        out.extend(c.feed(e))
    if until_ns is not None:
        out.extend(c.advance(until_ns))
    return c, out


def final(transitions: Iterable[ev.Finding]) -> dict[str, ev.Finding]:
    """The last record of every finding_id (its current state)."""
    out: dict[str, ev.Finding] = {}
    for f in transitions:
        out[f.finding_id] = f
    return out


def of_rule(transitions: Iterable[ev.Finding], rule: str) -> list[ev.Finding]:
    """Current state of every finding of `rule`, ordered by id."""
    cur = final(transitions)
    return [cur[k] for k in sorted(cur) if cur[k].rule == rule]


QEMU_BUS_LINE = ("qemu-system-x86_64: -device vfio-pci,host=0000:01:10.0,x-pci-vendor-id=0x8086,"
                 "x-pci-device-id=0x10ca,bus=<unknown PCIePortBusPrefix: >0: "
                 "Bus '<unknown PCIePortBusPrefix: >0' not found")


def lab_session() -> list[ev.Event]:
    """The whole recorded lab session as one agent stream: inventory and Kata context, then
    every recorded move with its actor (Kata's shim for the 3.8 pair, an unexpected process for
    the 3.0-3.7 pair), Kata's #10162 log lines, a uevent loss and resync, and the clock running
    on until every grace period and window has passed."""
    t0 = start_ns()
    inv = inventory(t0)
    tr = tracker_for(inv)
    bad = ev.KataConfig(handler="kata-nvidia", path="/etc/kata-containers/runtimes/nvidia.toml",
                        cold_plug_vfio="root-port", hot_plug_vfio="root-port",
                        pcie_root_port=8, machine_type="q35")
    out: list[ev.Event] = [
        ev.SourceStateChanged(ts_ns=t0, source="runtime", name="uevent", up=True),
        inv, kata_config(t0), ev.KataConfigLoaded(ts_ns=t0, source="kata", config=bad),
    ]
    out += phase_events("kata38-bind-vfio", tr, actor=KATA_SHIM)
    bound = out[-1].ts_ns
    for dt_ns, sig, text, level in (
        (300_000_000, "qemu-bus-not-found", QEMU_BUS_LINE, "error"),
        (310_000_000, "cannot-start-vm", "Cannot start VM", "error"),
        (320_000_000, "create-rollback", "Removing network after failure in createSandbox", "info"),
    ):
        out.append(ev.LogLineMatched(
            ts_ns=bound + dt_ns, source="kata", signature=sig, text=text, origin="journald:kata",
            level=level, sandbox_id=SID, bdf=VF if sig == "qemu-bus-not-found" else None,
            pid=4242, qemu_pid=5150))
    out += phase_events("kata38-restore", tr, actor=KATA_SHIM)
    out += phase_events("clear-override", tr, actor=OPERATOR)
    out += phase_events("kata30-bind-vfio", tr, actor=STRANGER)
    out += phase_events("kata30-restore", tr, actor=STRANGER)
    t = out[-1].ts_ns
    out += [
        ev.EventsLost(ts_ns=t + 100_000_000, source="uevent", lost_source="uevent", count=7,
                      reason="ENOBUFS"),
        ev.Resynced(ts_ns=t + 150_000_000, source="uevent", resynced_source="uevent", changes=0,
                    reason="ENOBUFS"),
    ]
    out += phase_events("sriov-destroy", tr, actor=OPERATOR)
    end = out[-1].ts_ns
    out += [tick(end + s * 1_000_000_000) for s in (10, 60, 130, 700)]
    return out
