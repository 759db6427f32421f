"""Provides the catalogue of every event record and the Finding, as frozen msgspec Structs.

Events are named in the past tense and are immutable, so they cross threads without copying.
Every event carries `ts_ns` (wall-clock nanoseconds since the epoch when the kernel or the
agent observed it) and `source` (the registry name of the source that produced it). Time in the
core comes only from these stamps. `kind` is the stable wire name used by the journal
(`diag.codec`); renaming a field or a kind is a schema change.

The records are msgspec Structs (frozen, keyword-only): the journal codec decodes a line
straight into its typed record, validating every field, and encodes one without building a
dict; a record costs a tenth of a frozen dataclass to make or to copy with `replace` (below).
Fields equal to their default are left out of the wire (`omit_defaults`), and `kind` is the tag
that says which record a line is.

Field names keep the kernel's names where they exist (`ifindex`, `comm`, `pid`) and put units
in the name (`ts_ns`, `count`). Every field has a one-line docstring: they double as the
journal schema documentation (README "Journal format").
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar, TypeVar

import msgspec
from msgspec.structs import replace as _struct_replace

T = TypeVar("T")


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of a record with `changes` (also of a frozen dataclass, such as the core's
    snapshot views): what `dataclasses.replace` is for dataclasses."""
    if isinstance(obj, msgspec.Struct):
        return _struct_replace(obj, **changes)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


EVENT_TYPES: dict[str, type[Event]] = {}
"""Every concrete event class by its wire `kind`, filled by `Event.__init_subclass__`."""


class Severity(enum.Enum):
    """How urgent a finding is; ordered so that severities compare (`rank`). On the wire and in
    logs a severity is its lower-case name (its value)."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def label(self) -> str:
        return self.value

    @property
    def rank(self) -> int:
        """10, 20, 30, 40: higher is more urgent."""
        return _RANK[self]

    def __lt__(self, other: Severity) -> bool:
        return _RANK[self] < _RANK[other]

    def __le__(self, other: Severity) -> bool:
        return _RANK[self] <= _RANK[other]

    def __gt__(self, other: Severity) -> bool:
        return _RANK[self] > _RANK[other]

    def __ge__(self, other: Severity) -> bool:
        return _RANK[self] >= _RANK[other]

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {text!r}; expected one of info, warning, error, critical"
            ) from None


_RANK = {Severity.INFO: 10, Severity.WARNING: 20, Severity.ERROR: 30, Severity.CRITICAL: 40}


# String defaults, shared by the field and by `__post_init__`: msgspec omits a field from the
# wire when it *is* its default (identity, not equality), so a value equal to the default but
# made elsewhere (parsed from TOML, decoded from a journal line) is replaced by the default
# object when the record is made. Only classes with a non-empty string default need it.
NONE_ROLE = "none"
GO = "go"
NO_PORT = "no-port"
QEMU = "qemu"
DEFAULT = "default"
WRITE = "write"
OPEN = "open"


def _canonical(obj: msgspec.Struct, defaults: tuple[tuple[str, str], ...]) -> None:
    for name, default in defaults:
        value = getattr(obj, name)
        if value is not default and value == default:
            msgspec.structs.force_setattr(obj, name, default)


class Record(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Base of the value records embedded in events (a device, a process, a namespace, ...).

    Not tracked by the cycle collector (`gc=False`, inherited by every record and event): a
    frozen record holds only strings, numbers, enums, tuples and other frozen records, so it
    can be part of no reference cycle, and the core makes several per finding transition
    (each tracked allocation brings the next young-generation collection nearer)."""


# --------------------------------------------------------------------------------------------
# Value records embedded in events (not events themselves)
# --------------------------------------------------------------------------------------------


class PciDevice(Record, frozen=True, kw_only=True):
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
    role: str = NONE_ROLE
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

    def __post_init__(self) -> None:
        if self.role is not NONE_ROLE and self.role == NONE_ROLE:
            msgspec.structs.force_setattr(self, "role", NONE_ROLE)


class Process(Record, frozen=True, kw_only=True):
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


class SettingValue(Record, frozen=True, kw_only=True):
    """One effective Kata setting and where its value came from."""

    key: str
    value: str
    origin: str
    """`file:<path>`, `drop-in:<path>`, `annotation:<key>`, or `default` (Kata's built-in)."""


class KataConfig(Record, frozen=True, kw_only=True):
    """The effective VFIO-relevant configuration of one Kata runtime handler."""

    handler: str
    """containerd runtime handler name (`kata`, `kata-qemu`), or `default` when none is known."""
    runtime: str = GO
    """`go` or `rs` (runtime-rs)."""
    path: str | None = None
    """Main configuration file; None when no Kata is installed."""
    dropins: tuple[str, ...] = ()
    cold_plug_vfio: str = NO_PORT
    hot_plug_vfio: str = NO_PORT
    pcie_root_port: int = 0
    pcie_switch_port: int = 0
    enable_annotations: tuple[str, ...] = ()
    machine_type: str = ""
    hypervisor: str = QEMU
    settings: tuple[SettingValue, ...] = ()
    """Origin of each of the four VFIO settings."""
    assumed: bool = False
    """True when no Kata configuration was found and Kata's built-in defaults are assumed."""

    def __post_init__(self) -> None:
        _canonical(self, (("runtime", GO), ("cold_plug_vfio", NO_PORT),
                          ("hot_plug_vfio", NO_PORT), ("hypervisor", QEMU)))


class Evidence(Record, frozen=True, kw_only=True, order=True):
    """One line of a finding's story: an event, summarised. Ordered by its fields in turn
    (time, then source, kind and text): a story sorts the same whatever the arrival order."""

    ts_ns: int
    source: str
    kind: str
    text: str


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind",
            gc=False):
    """Base of every event. Never instantiated directly; untracked by the cycle collector, as
    `Record` (frozen, no mutable field: no cycle can run through an event)."""

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
        kind = cls.__dict__.get("kind")
        if kind:
            other = EVENT_TYPES.get(kind)
            if other is not None and other.__qualname__ != cls.__qualname__:
                raise TypeError(f"duplicate event kind {kind!r}")
            EVENT_TYPES[kind] = cls


# ---- PCI devices (uevents, sysfs scan) -----------------------------------------------------


class InventoryObserved(Event, frozen=True, kw_only=True, tag="inventory_observed"):
    """A full scan of the PCI devices; the state every journal starts from."""

    kind: ClassVar[str] = "inventory_observed"
    devices: tuple[PciDevice, ...]


class DeviceAdded(Event, frozen=True, kw_only=True, tag="device_added"):
    """A PCI device appeared (hot-plug, VF creation via sriov_numvfs, rescan)."""

    kind: ClassVar[str] = "device_added"
    bdf: str
    vendor: str = ""
    device: str = ""
    class_code: str = ""
    pf: str | None = None
    vf_index: int | None = None


class DeviceRemoved(Event, frozen=True, kw_only=True, tag="device_removed"):
    """A PCI device disappeared (VF destroyed, hot-unplug, `remove`)."""

    kind: ClassVar[str] = "device_removed"
    bdf: str


class DeviceBound(Event, frozen=True, kw_only=True, tag="device_bound"):
    """A driver was bound to a PCI device (kernel `bind` uevent)."""

    kind: ClassVar[str] = "device_bound"
    bdf: str
    driver: str
    previous_driver: str | None = None
    """The driver the device had before its last unbind, from the agent's state."""


class DeviceUnbound(Event, frozen=True, kw_only=True, tag="device_unbound"):
    """A PCI device lost its driver (kernel `unbind` uevent, which carries no DRIVER)."""

    kind: ClassVar[str] = "device_unbound"
    bdf: str
    previous_driver: str | None = None
    """The driver the device left, from the agent's state; None when never known."""


class DeviceChanged(Event, frozen=True, kw_only=True, tag="device_changed"):
    """A `change` uevent for a PCI device, or a sysfs attribute changed (seen on resync)."""

    kind: ClassVar[str] = "device_changed"
    bdf: str
    driver: str | None = None
    attribute: str = ""
    """Which attribute changed when known (`driver_override`, `sriov_numvfs`); empty otherwise."""
    value: str | None = None


class NetdevAdded(Event, frozen=True, kw_only=True, tag="netdev_added"):
    """A network interface was registered under a PCI device (`add net` uevent)."""

    kind: ClassVar[str] = "netdev_added"
    bdf: str | None
    ifname: str
    ifindex: int | None = None


class NetdevRemoved(Event, frozen=True, kw_only=True, tag="netdev_removed"):
    """A network interface was unregistered (`remove net` uevent)."""

    kind: ClassVar[str] = "netdev_removed"
    bdf: str | None
    ifname: str
    ifindex: int | None = None


class VfioDeviceAdded(Event, frozen=True, kw_only=True, tag="vfio_device_added"):
    """vfio created its nodes for a device (`add vfio` group and/or `add vfio-dev`)."""

    kind: ClassVar[str] = "vfio_device_added"
    bdf: str | None
    group: int | None = None
    devname: str = ""
    """`vfio/<group>` or `vfio/devices/vfio0`."""


class VfioDeviceRemoved(Event, frozen=True, kw_only=True, tag="vfio_device_removed"):
    """vfio removed a node (`remove vfio` / `remove vfio-dev`)."""

    kind: ClassVar[str] = "vfio_device_removed"
    bdf: str | None
    group: int | None = None
    devname: str = ""


class DriverRegistered(Event, frozen=True, kw_only=True, tag="driver_registered"):
    """A driver registered with a bus (`add` uevent on `/bus/<bus>/drivers/<driver>`: the module
    was loaded); devices waiting for it may bind next."""

    kind: ClassVar[str] = "driver_registered"
    bus: str
    """Bus name from the uevent path (`pci`)."""
    driver: str
    """Driver name as the bus knows it (`vfio-pci`, `igbvf`)."""


class DriverUnregistered(Event, frozen=True, kw_only=True, tag="driver_unregistered"):
    """A driver left a bus (`remove` uevent on `/bus/<bus>/drivers/<driver>`: module unloaded)."""

    kind: ClassVar[str] = "driver_unregistered"
    bus: str
    driver: str


# ---- Links (rtnetlink) ----------------------------------------------------------------------


class NetnsRef(Record, frozen=True, kw_only=True):
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


class NetnsAdded(Event, frozen=True, kw_only=True, tag="netns_added"):
    """A network namespace was discovered (named, or held only by a process)."""

    kind: ClassVar[str] = "netns_added"
    netns: NetnsRef


class NetnsRemoved(Event, frozen=True, kw_only=True, tag="netns_removed"):
    """A network namespace is gone."""

    kind: ClassVar[str] = "netns_removed"
    netns: NetnsRef


class LinkChanged(Event, frozen=True, kw_only=True, tag="link_changed"):
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


class LinkRemoved(Event, frozen=True, kw_only=True, tag="link_removed"):
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


class SysfsWriteObserved(Event, frozen=True, kw_only=True, tag="sysfs_write_observed"):
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
    stage: str = WRITE
    """`write` (value and result are the write's) or `open` (only the open was seen: it failed,
    or the open-only tracepoint variant ran; the value is empty unless recovered)."""


# ---- Kata context -----------------------------------------------------------------------------

    def __post_init__(self) -> None:
        if self.stage is not WRITE and self.stage == WRITE:
            msgspec.structs.force_setattr(self, "stage", WRITE)


class KataConfigLoaded(Event, frozen=True, kw_only=True, tag="kata_config_loaded"):
    """The effective configuration of a Kata runtime handler was read (at start or on change)."""

    kind: ClassVar[str] = "kata_config_loaded"
    config: KataConfig
    changed: bool = False
    """True when this replaces an earlier view of the same handler."""


class KataConfigInvalid(Event, frozen=True, kw_only=True, tag="kata_config_invalid"):
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


class SandboxVf(Record, frozen=True, kw_only=True):
    """A VF a sandbox uses (physical endpoint or VFIO device)."""

    bdf: str
    host_driver: str | None = None


class SandboxStarted(Event, frozen=True, kw_only=True, tag="sandbox_started"):
    """A Kata sandbox was discovered (state file, shim or VMM process); re-sent on change."""

    kind: ClassVar[str] = "sandbox_started"
    sandbox_id: str
    runtime: str = GO
    handler: str | None = None
    pod: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    netns: NetnsRef | None = None
    shim_pid: int | None = None
    vmm_pid: int | None = None
    cold_plug_vfio: str = NO_PORT
    """Effective value for this sandbox (config + enabled annotations)."""
    cold_plug_origin: str = DEFAULT
    hot_plug_vfio: str = NO_PORT
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

    def __post_init__(self) -> None:
        _canonical(self, (("runtime", GO), ("cold_plug_vfio", NO_PORT),
                          ("cold_plug_origin", DEFAULT), ("hot_plug_vfio", NO_PORT)))


class SandboxStopped(Event, frozen=True, kw_only=True, tag="sandbox_stopped"):
    """A Kata sandbox is gone (state file and processes)."""

    kind: ClassVar[str] = "sandbox_stopped"
    sandbox_id: str


class KataVersionReading(Record, frozen=True, kw_only=True):
    """One reading of a Kata handler's version (or of its absence), and where it was read."""

    source: str
    """`binary`, `dpkg`, `rpm`, `kata-deploy`, `collect-script`, `kata-env`, `log`, ..."""
    detail: str
    """What was read, where: `dpkg kata-containers 3.8.0-1 (/var/lib/dpkg/status) owns ...`."""
    version: str = ""
    """The version text as read; empty when this source gave none (`detail` says why)."""
    exact: bool = True
    """False for a heuristic or indirect reading (a stripped binary, a package not owning the
    shim, a package listing): it wins only when nothing exact gave a version."""


class VfCandidate(Record, frozen=True, kw_only=True):
    """A VF that pods can be given as a network interface."""

    bdf: str
    pf: str | None = None
    driver: str | None = None
    netdevs: tuple[str, ...] = ()
    resource: str = ""
    """The SR-IOV device plugin resource that selects it, empty when none is configured."""


class KataHandlerFacts(Record, frozen=True, kw_only=True):
    """What one Kata runtime handler's exposure to the known VFIO bugs depends on (kata-facts §0)."""

    handler: str
    runtime: str = GO
    """`go` or `rs` (runtime-rs)."""
    runtime_basis: str = ""
    """How the runtime was told: containerd's runtime_path, the shim's install path, a report."""
    version: str = ""
    """Kata's version as the winning reading gave it; empty when unknown."""
    version_source: KataVersionReading | None = None
    """The reading that won, None when none gave a version."""
    readings: tuple[KataVersionReading, ...] = ()
    """Every source consulted, the winner included."""
    config_path: str | None = None
    cold_plug_vfio: str = NO_PORT
    cold_plug_origin: str = DEFAULT
    hot_plug_vfio: str = NO_PORT
    pcie_root_port: int = 0
    pcie_root_port_origin: str = DEFAULT
    hypervisor: str = QEMU
    annotation_enabled: bool = False
    """`enable_annotations` lets a pod set `cold_plug_vfio` and containerd passes it on."""
    vfs: tuple[VfCandidate, ...] = ()
    vfs_basis: str = ""
    """How the VFs were chosen (the device plugin's selectors, or every VF on a host driver)."""
    vfs_known: bool = True
    """False when nothing said which VFs exist (a postmortem without an inventory): judged as
    if pods could be given one."""
    assumed: bool = False
    """No Kata installed: nothing to assess."""

    def __post_init__(self) -> None:
        _canonical(self, (("runtime", GO), ("cold_plug_vfio", NO_PORT),
                          ("cold_plug_origin", DEFAULT), ("hot_plug_vfio", NO_PORT),
                          ("pcie_root_port_origin", DEFAULT), ("hypervisor", QEMU)))


class KataFactsObserved(Event, frozen=True, kw_only=True, tag="kata_facts_observed"):
    """A Kata handler's version (and where it was read), effective cold_plug_vfio and the VFs pods
    can be given, read at start and again whenever one of them changes; the core judges from
    them which known Kata VFIO bug the handler is exposed to (rule `kata-vfio-exposure`)."""

    kind: ClassVar[str] = "kata_facts_observed"
    facts: KataHandlerFacts
    gone: bool = False
    """The handler is no longer configured: its exposure ends."""


class VfioGroupHeld(Event, frozen=True, kw_only=True, tag="vfio_group_held"):
    """A process holds /dev/vfio/<group> open (QEMU, or anything else)."""

    kind: ClassVar[str] = "vfio_group_held"
    group: int
    holder: Process


class VfioGroupReleased(Event, frozen=True, kw_only=True, tag="vfio_group_released"):
    """No process holds /dev/vfio/<group> any more (or the given holder let go)."""

    kind: ClassVar[str] = "vfio_group_released"
    group: int
    pid: int | None = None


class LogLineMatched(Event, frozen=True, kw_only=True, tag="log_line_matched"):
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


class SourceStateChanged(Event, frozen=True, kw_only=True, tag="source_state_changed"):
    """A source started, stopped, failed or is unavailable (with the reason and the fix)."""

    kind: ClassVar[str] = "source_state_changed"
    name: str
    up: bool
    mode: str = ""
    """Source-specific mode (`kprobe`, `tracepoint`), empty when it has none."""
    reason: str = ""
    hint: str = ""


class EventsLost(Event, frozen=True, kw_only=True, tag="events_lost"):
    """A source lost events (ENOBUFS, perf/ring buffer loss, queue overflow)."""

    kind: ClassVar[str] = "events_lost"
    lost_source: str
    count: int | None = None
    """How many, when known; None when the kernel only said that some were lost."""
    reason: str = ""


class Resynced(Event, frozen=True, kw_only=True, tag="resynced"):
    """A source re-read the kernel's state after a loss; the differences follow as events."""

    kind: ClassVar[str] = "resynced"
    resynced_source: str
    changes: int = 0
    reason: str = ""


class DecodeFailed(Event, frozen=True, kw_only=True, tag="decode_failed"):
    """Raw input a decoder could not parse; counted, and the first of each source is kept."""

    kind: ClassVar[str] = "decode_failed"
    failed_source: str
    reason: str
    sample_hex: str = ""
    count: int = 1


class ClockTicked(Event, frozen=True, kw_only=True, tag="clock_ticked"):
    """Time advanced with nothing else happening; lets grace periods expire in replay."""

    kind: ClassVar[str] = "clock_ticked"


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------


class Finding(Event, frozen=True, kw_only=True, tag="finding"):
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
    status: str = OPEN
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
    labels: tuple[tuple[str, str], ...] = ()
    """Extra rule-specific key/value pairs (`count`, `actors`, `group`, ...)."""

    @property
    def active(self) -> bool:
        return self.status != "resolved"

    def __post_init__(self) -> None:
        if self.status is not OPEN and self.status == OPEN:
            msgspec.structs.force_setattr(self, "status", OPEN)


