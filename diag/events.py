"""Provides the catalogue of every event record and the Finding, as frozen dataclasses.

Events are named in the past tense and are immutable, so they cross threads without copying.
Every event carries `ts_ns` (wall-clock nanoseconds since the epoch when the kernel or the
agent observed it) and `source` (the registry name of the source that produced it). Time in the
core comes only from these stamps. `kind` is the stable wire name used by the journal
(`diag.codec`); renaming a field or a kind is a schema change.

Field names keep the kernel's names where they exist (`ifindex`, `comm`, `pid`) and put units
in the name (`ts_ns`, `count`). Every field has a one-line docstring: they double as the
journal schema documentation (README "Journal format").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

EVENT_TYPES: dict[str, type[Event]] = {}
"""Every concrete event class by its wire `kind`, filled by `Event.__init_subclass__`."""


class Severity(enum.IntEnum):
    """How urgent a finding is; ordered so that severities compare."""

    INFO = 10
    WARNING = 20
    ERROR = 30
    CRITICAL = 40

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {text!r}; expected one of info, warning, error, critical"
            ) from None


# --------------------------------------------------------------------------------------------
# Value records embedded in events (not events themselves)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PciDevice:
    """One PCI function as read from sysfs (`/sys/bus/pci/devices/<bdf>`)."""

    bdf: str
    """Full address, domain included: `0000:01:10.0`."""
    vendor: str = ""
    """Vendor id as four hex digits without 0x (`8086`); empty when unreadable."""
    device: str = ""
    """Device id as four hex digits without 0x (`10ca`)."""
    class_code: str = ""
    """Six hex digits (`020000` = Ethernet controller)."""
    subsystem_vendor: str = ""
    subsystem_device: str = ""
    vendor_name: str = ""
    """From pci.ids when available, else empty."""
    device_name: str = ""
    driver: str | None = None
    """Basename of the `driver` link; None when no driver is bound."""
    driver_override: str | None = None
    """Content of `driver_override`; None when `(null)` or absent."""
    iommu_group: int | None = None
    numa_node: int | None = None
    """None when the kernel reports -1 (no NUMA affinity) or the file is absent."""
    role: str = "none"
    """`pf` (has SR-IOV capability), `vf` (has a `physfn` link) or `none`."""
    pf: str | None = None
    """For a VF, the BDF of its PF."""
    vf_index: int | None = None
    """For a VF, N of the PF's `virtfnN` link that points at it."""
    sriov_numvfs: int | None = None
    sriov_totalvfs: int | None = None
    vfs: tuple[str, ...] = ()
    """For a PF, its VFs' BDFs ordered by VF index."""
    netdevs: tuple[str, ...] = ()
    """Interface names under the device's `net/` directory (host namespace only)."""
    vfio_group_path: str | None = None
    """`/dev/vfio/<group>` for a device bound to vfio-pci (whether or not the node exists)."""
    modules: tuple[str, ...] = ()
    """Kernel modules that can drive it (`lspci -k`'s `Kernel modules:`): names the host driver
    of a VF that no event names (its driver moved before the capture began)."""
    errors: tuple[str, ...] = ()
    """`attribute: why` for every attribute that could not be read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Process:
    """A process identity as far as the agent knows it."""

    pid: int
    """Thread-group id (what `ps` shows as PID)."""
    ppid: int | None = None
    comm: str = ""
    """Kernel command name, at most 15 characters (`containerd-shim` for the Kata shim)."""
    exe: str = ""
    """Resolved `/proc/<pid>/exe`, empty when unknown."""
    cmdline: str = ""
    """Space-joined argv, truncated; empty when unknown."""
    cgroup: str = ""
    """cgroup v2 path (`/kubepods/.../cri-containerd-<id>.scope`)."""
    cgroup_id: int | None = None
    container_id: str | None = None
    pod: str | None = None
    pod_namespace: str | None = None
    sandbox_id: str | None = None
    """Kata sandbox id when the process is (or descends from) a Kata shim or VMM."""
    kata_runtime: str | None = None
    """`go` or `rs` when the process is a Kata shim; None otherwise."""
    ancestry: tuple[str, ...] = ()
    """comm of parent, grandparent, ... (nearest first), at most 8."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingValue:
    """One effective Kata setting and where its value came from."""

    key: str
    value: str
    origin: str
    """`file:<path>`, `drop-in:<path>`, `annotation:<key>`, or `default` (Kata's built-in)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KataConfig:
    """The effective VFIO-relevant configuration of one Kata runtime handler."""

    handler: str
    """containerd runtime handler name (`kata`, `kata-qemu`), or `default` when none is known."""
    runtime: str = "go"
    """`go` or `rs` (runtime-rs)."""
    path: str | None = None
    """Main configuration file; None when no Kata is installed."""
    dropins: tuple[str, ...] = ()
    cold_plug_vfio: str = "no-port"
    hot_plug_vfio: str = "no-port"
    pcie_root_port: int = 0
    pcie_switch_port: int = 0
    enable_annotations: tuple[str, ...] = ()
    machine_type: str = ""
    hypervisor: str = "qemu"
    settings: tuple[SettingValue, ...] = ()
    """Origin of each of the four VFIO settings."""
    assumed: bool = False
    """True when no Kata configuration was found and Kata's built-in defaults are assumed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """One line of a finding's story: an event, summarised."""

    ts_ns: int
    source: str
    kind: str
    text: str


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event. Never instantiated directly."""

    kind: ClassVar[str] = ""
    ts_ns: int
    """Wall-clock time of the observation, nanoseconds since the epoch."""
    source: str
    """Registry name of the producing source (`uevent`, `links`, `ebpf`, `kata`, `sysfs`, ...)."""
    synthetic: bool = False
    """True for synthetic kernel events (SYNTH_UUID: `udevadm trigger`, tests)."""
    resync: bool = False
    """True when the event was produced by a resynchronisation after loss, not observed live."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        # No zero-argument super(): slots=True rebuilds the class and breaks its __class__ cell.
        kind = cls.__dict__.get("kind")
        if kind:
            other = EVENT_TYPES.get(kind)
            if other is not None and other.__qualname__ != cls.__qualname__:
                raise TypeError(f"duplicate event kind {kind!r}")
            EVENT_TYPES[kind] = cls


# ---- PCI devices (uevents, sysfs scan) -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InventoryObserved(Event):
    """A full scan of the PCI devices; the state every journal starts from."""

    kind: ClassVar[str] = "inventory_observed"
    devices: tuple[PciDevice, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAdded(Event):
    """A PCI device appeared (hot-plug, VF creation via sriov_numvfs, rescan)."""

    kind: ClassVar[str] = "device_added"
    bdf: str
    vendor: str = ""
    device: str = ""
    class_code: str = ""
    pf: str | None = None
    vf_index: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRemoved(Event):
    """A PCI device disappeared (VF destroyed, hot-unplug, `remove`)."""

    kind: ClassVar[str] = "device_removed"
    bdf: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceBound(Event):
    """A driver was bound to a PCI device (kernel `bind` uevent)."""

    kind: ClassVar[str] = "device_bound"
    bdf: str
    driver: str
    previous_driver: str | None = None
    """The driver the device had before its last unbind, from the agent's state."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceUnbound(Event):
    """A PCI device lost its driver (kernel `unbind` uevent, which carries no DRIVER)."""

    kind: ClassVar[str] = "device_unbound"
    bdf: str
    previous_driver: str | None = None
    """The driver the device left, from the agent's state; None when never known."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceChanged(Event):
    """A `change` uevent for a PCI device, or a sysfs attribute changed (seen on resync)."""

    kind: ClassVar[str] = "device_changed"
    bdf: str
    driver: str | None = None
    attribute: str = ""
    """Which attribute changed when known (`driver_override`, `sriov_numvfs`); empty otherwise."""
    value: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NetdevAdded(Event):
    """A network interface was registered under a PCI device (`add net` uevent)."""

    kind: ClassVar[str] = "netdev_added"
    bdf: str | None
    ifname: str
    ifindex: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NetdevRemoved(Event):
    """A network interface was unregistered (`remove net` uevent)."""

    kind: ClassVar[str] = "netdev_removed"
    bdf: str | None
    ifname: str
    ifindex: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VfioDeviceAdded(Event):
    """vfio created its nodes for a device (`add vfio` group and/or `add vfio-dev`)."""

    kind: ClassVar[str] = "vfio_device_added"
    bdf: str | None
    group: int | None = None
    devname: str = ""
    """`vfio/<group>` or `vfio/devices/vfio0`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VfioDeviceRemoved(Event):
    """vfio removed a node (`remove vfio` / `remove vfio-dev`)."""

    kind: ClassVar[str] = "vfio_device_removed"
    bdf: str | None
    group: int | None = None
    devname: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverRegistered(Event):
    """A driver registered with a bus (`add` uevent on `/bus/<bus>/drivers/<driver>`: the module
    was loaded); devices waiting for it may bind next."""

    kind: ClassVar[str] = "driver_registered"
    bus: str
    """Bus name from the uevent path (`pci`)."""
    driver: str
    """Driver name as the bus knows it (`vfio-pci`, `igbvf`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverUnregistered(Event):
    """A driver left a bus (`remove` uevent on `/bus/<bus>/drivers/<driver>`: module unloaded)."""

    kind: ClassVar[str] = "driver_unregistered"
    bus: str
    driver: str


# ---- Links (rtnetlink) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NetnsRef:
    """A network namespace identity a user can act on."""

    inode: int
    """Namespace inode (`stat -L /proc/<pid>/ns/net`); the stable key."""
    name: str | None = None
    """Name under /run/netns when it has one."""
    pid: int | None = None
    """A process that holds it, when it has no name."""
    is_host: bool = False
    sandbox_id: str | None = None
    pod: str | None = None
    pod_namespace: str | None = None

    @property
    def label(self) -> str:
        if self.is_host:
            return "host"
        if self.name:
            return self.name
        if self.pid is not None:
            return f"pid:{self.pid}"
        return f"net:[{self.inode}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetnsAdded(Event):
    """A network namespace was discovered (named, or held only by a process)."""

    kind: ClassVar[str] = "netns_added"
    netns: NetnsRef


@dataclass(frozen=True, slots=True, kw_only=True)
class NetnsRemoved(Event):
    """A network namespace is gone."""

    kind: ClassVar[str] = "netns_removed"
    netns: NetnsRef


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkChanged(Event):
    """RTM_NEWLINK: a link appeared or changed (state, name, namespace)."""

    kind: ClassVar[str] = "link_changed"
    ifindex: int
    ifname: str
    netns: NetnsRef
    operstate: str = ""
    """`UP`, `DOWN`, `LOWERLAYERDOWN`, `UNKNOWN`, ..."""
    carrier: bool | None = None
    admin_up: bool = False
    mac: str = ""
    bdf: str | None = None
    """PCI address of the parent device, when the link is backed by a PCI function."""
    link_kind: str = ""
    """IFLA_INFO_KIND (`veth`, ...), empty for physical devices."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkRemoved(Event):
    """RTM_DELLINK: a link was removed (or left this namespace)."""

    kind: ClassVar[str] = "link_removed"
    ifindex: int
    ifname: str
    netns: NetnsRef
    bdf: str | None = None


# ---- Attribution (eBPF) ---------------------------------------------------------------------


KATA_LOG = "kata-log"
"""Where a fact comes from when Kata's own log lines give it: the `mode` of a write a Kata line
announces, and the `source` of the kernel's unbind/bind a postmortem infers from such writes
where no kernel capture covers them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SysfsWriteObserved(Event):
    """A process wrote to a PCI driver-control file in sysfs."""

    kind: ClassVar[str] = "sysfs_write_observed"
    actor: Process
    path: str
    """The file as resolved in sysfs (`/sys/bus/pci/devices/0000:01:10.0/driver_override`)."""
    control: str
    """`driver_override`, `unbind`, `bind`, `drivers_probe`, `new_id`, `remove_id`, `remove`,
    `reset`, `sriov_numvfs`, `sriov_drivers_autoprobe` or `rescan`."""
    value: str
    """What was written, trailing newline stripped."""
    bdf: str | None = None
    """The device the write is about (from the path or the value)."""
    driver: str | None = None
    """The driver the path names (`drivers/<driver>/bind`) or the value names (override)."""
    result: int = 0
    """Bytes written (>= 0) or -errno; for `stage` `open`, the open's fd or -errno."""
    value_recovered: bool = False
    """True when the value was not read in the kernel but recovered afterwards."""
    mode: str = ""
    """Probe mode that saw it: `kprobe` or `tracepoint`; `kata-log` (KATA_LOG) when the write is
    known from Kata's own log line announcing it, not seen by eBPF."""
    stage: str = "write"
    """`write` (value and result are the write's) or `open` (only the open was seen: it failed,
    or the open-only tracepoint variant ran; the value is empty unless recovered)."""


# ---- Kata context -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KataConfigLoaded(Event):
    """The effective configuration of a Kata runtime handler was read (at start or on change)."""

    kind: ClassVar[str] = "kata_config_loaded"
    config: KataConfig
    changed: bool = False
    """True when this replaces an earlier view of the same handler."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KataConfigInvalid(Event):
    """A Kata configuration (file or pod annotation) that Kata itself would reject."""

    kind: ClassVar[str] = "kata_config_invalid"
    path: str
    message: str
    """Kata's own error text where it has one."""
    handler: str | None = None
    line: int | None = None
    """1-based line in `path` (TOML parse position, or the line assigning `key`)."""
    key: str | None = None
    sandbox_id: str | None = None
    column: int | None = None
    """1-based column when the TOML parser gave one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxVf:
    """A VF a sandbox uses (physical endpoint or VFIO device)."""

    bdf: str
    host_driver: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxStarted(Event):
    """A Kata sandbox was discovered (state file, shim or VMM process); re-sent on change."""

    kind: ClassVar[str] = "sandbox_started"
    sandbox_id: str
    runtime: str = "go"
    handler: str | None = None
    pod: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    netns: NetnsRef | None = None
    shim_pid: int | None = None
    vmm_pid: int | None = None
    cold_plug_vfio: str = "no-port"
    """Effective value for this sandbox (config + enabled annotations)."""
    cold_plug_origin: str = "default"
    hot_plug_vfio: str = "no-port"
    pcie_root_port: int = 0
    vfs: tuple[SandboxVf, ...] = ()
    vmm_vfio_devices: tuple[str, ...] = ()
    """BDFs given to the VMM (`-device vfio-pci,host=<BDF>`)."""
    state_file: str | None = None
    """persist.json / state.json, None when it has none (failed creation)."""
    pcie_switch_port: int = 0
    config_path: str | None = None
    """The handler's main Kata configuration file when the sandbox was first seen."""
    settings: tuple[SettingValue, ...] = ()
    """Origin of each effective VFIO setting (file, drop-in, annotation, default, state)."""
    vmm_vfio_buses: tuple[str, ...] = ()
    """`bus=` of each `-device vfio-pci` in `vmm_vfio_devices` order (empty string when none)."""
    refused: str = ""
    """Kata's error when it would refuse this sandbox's annotations (sandbox creation fails)."""
    config_changed_since_start: bool = False
    """The handler's configuration files changed after this sandbox's shim started (before the
    agent saw it): the sandbox may run with older values than the ones shown."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxStopped(Event):
    """A Kata sandbox is gone (state file and processes)."""

    kind: ClassVar[str] = "sandbox_stopped"
    sandbox_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VfioGroupHeld(Event):
    """A process holds /dev/vfio/<group> open (QEMU, or anything else)."""

    kind: ClassVar[str] = "vfio_group_held"
    group: int
    holder: Process


@dataclass(frozen=True, slots=True, kw_only=True)
class VfioGroupReleased(Event):
    """No process holds /dev/vfio/<group> any more (or the given holder let go)."""

    kind: ClassVar[str] = "vfio_group_released"
    group: int
    pid: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LogLineMatched(Event):
    """A Kata, QEMU, containerd or kernel log line matched a known signature."""

    kind: ClassVar[str] = "log_line_matched"
    signature: str
    """Stable signature id (`qemu-bus-not-found`, `vfio-group-not-viable`, ...)."""
    text: str
    """The message, as logged (escaped when shown)."""
    origin: str = ""
    """Where it was read: `journald:kata`, `file:<path>`, `kmsg`."""
    level: str = ""
    sandbox_id: str | None = None
    bdf: str | None = None
    pid: int | None = None
    qemu_pid: int | None = None
    iommu_group: int | None = None


# ---- Health, loss and resync ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceStateChanged(Event):
    """A source started, stopped, failed or is unavailable (with the reason and the fix)."""

    kind: ClassVar[str] = "source_state_changed"
    name: str
    up: bool
    mode: str = ""
    """Source-specific mode (`kprobe`, `tracepoint`), empty when it has none."""
    reason: str = ""
    hint: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsLost(Event):
    """A source lost events (ENOBUFS, perf/ring buffer loss, queue overflow)."""

    kind: ClassVar[str] = "events_lost"
    lost_source: str
    count: int | None = None
    """How many, when known; None when the kernel only said that some were lost."""
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resynced(Event):
    """A source re-read the kernel's state after a loss; the differences follow as events."""

    kind: ClassVar[str] = "resynced"
    resynced_source: str
    changes: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeFailed(Event):
    """Raw input a decoder could not parse; counted, and the first of each source is kept."""

    kind: ClassVar[str] = "decode_failed"
    failed_source: str
    reason: str
    sample_hex: str = ""
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockTicked(Event):
    """Time advanced with nothing else happening; lets grace periods expire in replay."""

    kind: ClassVar[str] = "clock_ticked"


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding(Event):
    """A condition an operator should act on, with its lifecycle (open -> update -> resolve).

    Emitted on every transition; the journal keeps each one, so the last record of a
    `finding_id` is its current state.
    """

    kind: ClassVar[str] = "finding"
    finding_id: str
    """Stable per episode: `<rule>/<key>/<first_ns>`."""
    rule: str
    """Rule id, a public contract (`vfio-bind-coldplug-disabled`)."""
    severity: Severity
    summary: str
    status: str = "open"
    """`open`, `updated` or `resolved`."""
    bdf: str | None = None
    pf: str | None = None
    vf_index: int | None = None
    netdev: str | None = None
    netns: str | None = None
    sandbox_id: str | None = None
    pod: str | None = None
    pod_namespace: str | None = None
    actor: Process | None = None
    first_ns: int = 0
    last_ns: int = 0
    resolved_ns: int | None = None
    resolved_reason: str = ""
    evidence: tuple[Evidence, ...] = ()
    explanation: str = ""
    remedy: str = ""
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """Extra rule-specific key/value pairs (`count`, `actors`, `group`, ...)."""

    @property
    def active(self) -> bool:
        return self.status != "resolved"
