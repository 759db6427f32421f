"""Provides the catalogue of Kata, QEMU and kernel log signatures about VFIO, with stable ids.

Pure: no I/O. Each row of kata-facts §4.3 is one or more `Signature`s; `match(message)` returns
the first that matches (the catalogue is ordered specific-first) with the values it extracted
(BDF, IOMMU group, interface, driver). Matching is a regex *search*, so an error wrapped by
containerd or kubelet (`failed to create shim task: <kata error>: unknown`) still matches.

The ids are a public contract (rules and the postmortem importer key on them): never rename one;
add a new id instead. Messages are matched as Kata prints them (logfmt `msg=` already unquoted).

API for importers:
    from diag.sources.kata import signatures
    m = signatures.match(text)          # -> SignatureMatch | None
    m.signature.id, m.bdf, m.iommu_group, m.fields
    signatures.BY_ID["qemu-bus-not-found"].summary
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diag.common.bdf import normalise_bdf

BDF_RE = r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
"""A full PCI address with its domain (`0000:84:01.1`)."""
_BDF = rf"(?P<bdf>{BDF_RE})"
_SHORT_BDF = r"(?P<bdf>(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])"
BDF_SEARCH = re.compile(rf"(?<![0-9a-fA-F:]){BDF_RE}(?![0-9a-fA-F])")
_HOST_ARG = re.compile(r"vfio-pci,host=((?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\b")


@dataclass(frozen=True, slots=True)
class Signature:
    """One known log message: what it looks like and what it means."""

    id: str
    """Stable kebab-case id (`qemu-bus-not-found`)."""
    pattern: re.Pattern[str]
    """Searched in the message; named groups `bdf`, `group`, `ifname`, `driver` are extracted."""
    severity: str
    """`error`, `warning` or `info`: how bad the event is for a VF, not the logged level."""
    runtime: str
    """Who prints it: `go`, `rs`, `qemu` (relayed by the Go shim), `kernel`, or `any`."""
    summary: str
    """One line an operator understands."""
    ref: str
    """Where it comes from (kata-facts §4.3 row, source file)."""


@dataclass(frozen=True, slots=True)
class SignatureMatch:
    """A message that matched a signature, with the values pulled out of it."""

    signature: Signature
    bdf: str | None = None
    """Normalised to the full domain form when the message had a short BDF."""
    iommu_group: int | None = None
    ifname: str | None = None
    driver: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    """Every named group that matched (`bus`, `err`, `count`, ...)."""


def _sig(id: str, pattern: str, severity: str, runtime: str, summary: str, ref: str) -> Signature:
    return Signature(id, re.compile(pattern), severity, runtime, summary, ref)


CATALOGUE: tuple[Signature, ...] = (
    # ---- #1: the #10162 failure (cold plug with no port) and other QEMU bus errors -----------
    _sig("qemu-bus-not-found",
         rf"-device vfio-pci,host={_SHORT_BDF}.{{0,1024}}?: Bus '(?P<bus>[^']{{0,256}})' not found",
         "error", "qemu",
         "QEMU refused the VF: its PCIe bus does not exist (cold_plug_vfio=no-port gives "
         "bus=<unknown PCIePortBusPrefix: >0, Kata #10162); the VF is left on vfio-pci",
         "kata-facts §4.3 #1; kata #10162"),
    _sig("qmp-bus-not-found", r"QMP command failed: Bus '(?P<bus>[^']*)' not found",
         "error", "qemu", "QEMU could not hot-plug a device: the PCIe bus does not exist",
         "kata #4211"),
    # ---- #2, #3: port not set / early refusal -------------------------------------------------
    _sig("port-not-set",
         rf"cold_plug_vfio= or hot_plug_vfio= port is not set for device {_SHORT_BDF}",
         "error", "go",
         "Kata moved the VF to vfio-pci, then failed: no cold/hot-plug port (Kata 3.2.x, "
         "or HotAttach)", "kata-facts §4.3 #2; kata #9014"),
    _sig("coldplug-disabled-refusal",
         r"unable to add PhysicalEndpoint (?P<ifname>\S*) ?because cold_plug_vfio is disabled",
         "error", "go",
         "Kata (>= 3.9) refused a VF pod because cold_plug_vfio is no-port; the VF was not moved",
         "kata-facts §4.3 #3; PR #10210"),
    # ---- #4, #19: IOMMU group problems seen by QEMU --------------------------------------------
    _sig("vfio-group-not-viable",
         rf"vfio {_SHORT_BDF}: group (?P<group>\d+) is not viable",
         "error", "qemu",
         "Another device of the VF's IOMMU group is not bound to vfio-pci",
         "kata-facts §4.3 #4"),
    _sig("vfio-group-not-viable-hint",
         r"Please ensure all devices within the iommu_group are bound to their vfio bus driver",
         "error", "qemu", "QEMU's second line after `group N is not viable`",
         "kata-facts §4.3 #4"),
    _sig("vfio-group-multiple-address-spaces",
         rf"vfio {_SHORT_BDF}: group (?P<group>\d+) used in multiple address spaces",
         "error", "qemu", "QEMU could not attach the group: it is used in multiple address spaces",
         "kata-facts §4.3 #19; kata #10622"),
    # ---- #5, #6: no IOMMU / group ---------------------------------------------------------------
    _sig("iommu-group-missing",
         rf"readlink /sys/bus/pci/devices/{_BDF}/iommu_group: no such file or directory",
         "error", "go",
         "The VF has no IOMMU group (IOMMU off); Kata unbound it and could not finish",
         "kata-facts §4.3 #5"),
    _sig("iommu-not-enabled",
         r"(?:iommu isn't set on kernel cmdline|IOMMU not enabled yet\.|iommu is not enabled)",
         "error", "rs", "The host IOMMU is not enabled; VFIO passthrough cannot work",
         "kata-facts §4.3 #6; runtime-rs vfio.rs"),
    _sig("vfio-group-path-missing",
         r"(?:IOMMU group path: (?P<path>\S+) not found, do bind device to vfio first\.|"
         r"please do bind device to vfio)",
         "error", "rs", "runtime-rs found no IOMMU group for the device (not on vfio-pci)",
         "kata-facts §4.3 #6"),
    _sig("iommu-group-device-missing",
         rf"device dbdf \"{_SHORT_BDF}\" dosn't exist in /sys/kernel/iommu_groups/(?P<group>\d+)/devices",
         "error", "rs", "The device is not listed in its IOMMU group",
         "kata-facts §4.3 #6"),
    # ---- #18: kernel vfio-pci while an unbind waits for the holder -----------------------------
    _sig("vfio-device-request",
         rf"vfio-pci {_BDF}: Relaying device request to user(?: \(#(?P<count>\d+)\))?",
         "warning", "kernel",
         "An unbind from vfio-pci is waiting for the process holding the VFIO group (QEMU)",
         "kata-facts §4.3 #18; kernels before 4.20 print no (#N): kata-containers/runtime#1669"),
    _sig("vfio-device-request-blocked",
         rf"vfio-pci {_BDF}: No device request channel registered, blocked until released by user",
         "warning", "kernel",
         "An unbind from vfio-pci is blocked until the holder closes the VFIO group",
         "kata-facts §4.3 #18"),
    # ---- failures seen in public reports (tests/fixtures/postmortem-real) ---------------------
    _sig("vfio-open-failed",
         rf"vfio(?: error)?:? (?:{_SHORT_BDF}: failed to open|error opening) /dev/vfio/"
         r"(?P<group>\d+): (?P<err>[A-Za-z][^\"'\\\n]{0,80})",
         "error", "qemu",
         "QEMU could not open the VF's VFIO group (Operation not permitted: the device cgroup or "
         "a container sandbox denies it; No such file: the group is gone)",
         "kata-containers/runtime#2774, #2605 (sandbox_cgroup_only=true)"),
    _sig("vfio-bar-reserve-failed",
         rf"vfio-pci {_BDF}: BAR (?P<bar>\d+): can't reserve",
         "warning", "kernel",
         "vfio-pci could not reserve one of the device's BARs (another driver or the firmware "
         "holds that memory range)", "kata-containers#10622 (kernel line)"),
    _sig("qemu-bar-mmap-failed",
         rf"Failed to mmap {_SHORT_BDF} BAR (?P<bar>\d+)\. Performance may be slow",
         "warning", "qemu", "QEMU could not map one of the device's BARs (slow, not fatal)",
         "kata-containers#10622"),
    _sig("qmp-device-not-found",
         r"QMP command failed: Device '(?P<id>[^']{0,128})' not found",
         "error", "qemu",
         "QEMU lost the hot-plugged VFIO device (often a group holding PCIe bridges that were "
         "passed too, Kata #2938, or a hot-plug racing the guest)",
         "kata-containers#2938, PR #3491"),
    _sig("qmp-bus-no-hotplug",
         r"Bus '(?P<bus>[^']{0,256})' does not support hotplugging",
         "error", "qemu",
         "QEMU cannot hot-plug onto that bus (a PCI bridge without SHPC, or the root bus): the "
         "device needs a PCIe root port", "kata-containers#5799"),
    _sig("agent-pci-translate-failed",
         rf"(?i:unable to translate host PCI address) {_SHORT_BDF}",
         "error", "agent",
         "The Kata agent found no guest PCI address for the host device (vfio_mode or the "
         "PCI path mapping), so the container did not start", "kata-containers#4091, #5676"),
    _sig("dragonball-vfio-create-failed",
         r"CreateVfioDevice\((?P<err>[A-Za-z]\w{0,64})\)",
         "error", "rs", "Dragonball could not create the VFIO device (e.g. NoResource: the "
         "host's physical address width is too small for its MMIO window)",
         "kata-containers#9509"),
    _sig("dragonball-vfio-add-failed",
         r"failed to add VFIO passthrough device: (?P<err>VfioDeviceMgr\(\w{0,64}\))",
         "error", "rs", "Dragonball refused to add the VFIO device (InvalidOperation: PCI "
         "hot-plug is not enabled in its VM configuration)", "kata-containers#9129"),
    _sig("dragonball-pci-hotplug-unsupported",
         r"dragonball hypervisor does not support PCI hotplug options",
         "error", "rs", "The runtime-rs configuration asks Dragonball for PCI hot-plug options "
         "it does not have", "kata-containers#6424"),
    _sig("clh-vfio-failed",
         r"cloud-hypervisor: [\d.]+s: ERROR:(?P<where>[\w./-]{0,80}vfio[\w./-]{0,40}:\d+) -- "
         r"(?P<err>.{1,300})",
         "error", "clh", "Cloud Hypervisor's VFIO device failed (e.g. guest memory could not "
         "be added to the IOMMU table: too little host memory)", "kata-containers/tests#2624"),
    _sig("cni-vf-netdev-missing",
         rf"cannot get a network device with pci address {_BDF}",
         "warning", "cni", "The CNI found no netdev for the VF: it is bound to vfio-pci (or "
         "left there by a failed sandbox, Kata PR #13790)", "kubeovn/kube-ovn#2081"),
    # ---- #10-#14: teardown and VM-start failures -----------------------------------------------
    _sig("error-removing-endpoint",
         r"Error removing endpoint (?P<ifname>\S*) ?: (?P<err>.*)",
         "error", "go",
         "Kata could not give the VF back to its host driver at teardown",
         "kata-facts §4.3 #10"),
    _sig("create-rollback", r"Removing network after failure in createSandbox",
         "warning", "go",
         "Sandbox creation failed; Kata restores only endpoints it had recorded (PR #13790)",
         "kata-facts §4.3 #11"),
    _sig("rs-detach-endpoint-failed", r"failed to detach endpoint: (?P<err>.*)",
         "error", "rs", "runtime-rs could not give the VF back to its host driver",
         "kata-facts §4.3 #12"),
    _sig("rs-bind-to-vfio-failed", r"bind physical endpoint from (?P<driver>\S+) to vfio",
         "error", "rs", "runtime-rs failed moving the VF from its driver to vfio-pci",
         "kata-facts §4.3 #12"),
    _sig("rs-bind-to-host-failed", r"bind physical endpoint device from vfio to (?P<driver>\S+)",
         "error", "rs", "runtime-rs failed moving the VF back to its host driver",
         "kata-facts §4.3 #12"),
    _sig("cannot-start-vm", r"Cannot start VM", "error", "go",
         "The VM did not start (e.g. QEMU died on a bus or IOMMU-group error)",
         "kata-facts §4.3 #13"),
    _sig("qemu-launch-failed", r"failed to launch qemu: (?P<err>.*)", "error", "go",
         "QEMU could not be launched", "kata-facts §4.3 #14"),
    _sig("qmp-connect-failed",
         r"Failed to connect to QEMU instance \(timeout (?P<timeout>\d+)s\): (?P<err>.*)",
         "error", "go", "Kata could not reach QEMU's QMP socket (QEMU may have exited)",
         "kata-facts §4.3 #14"),
    _sig("qemu-exited-error", r"QEMU exited with an error", "error", "go",
         "QEMU exited non-zero", "kata-facts §4.1 (LogAndWait)"),
    _sig("vfio-hotplug-failed", r"failed to hotplug VFIO device", "error", "go",
         "Hot-plugging a VFIO device into the VM failed (the line's error says why)",
         "kata-containers#4211, #10622, #12091"),
    # ---- #15: VF admin MAC ------------------------------------------------------------------------
    _sig("vf-admin-mac-skipped",
         r"(?:setVfAdminMAC: skipped|set_vf_admin_mac: skipped for (?P<bdf>\S+) \((?P<err>.*)\)),"
         r" falling back to in-guest MAC reconciliation",
         "warning", "any", "Kata could not set the VF MAC on the PF (not fatal)",
         "kata-facts §4.3 #15"),
    # ---- #16: DAN VFIO NIC ----------------------------------------------------------------------
    _sig("dan-vfio-no-hotplug-port",
         rf"cannot attach VFIO network interface \"(?P<ifname>[^\"]*)\" \(BDF {_SHORT_BDF}\): "
         r"hot_plug_vfio port is not configured",
         "error", "go", "A DAN VFIO NIC needs hot_plug_vfio set", "kata-facts §4.3 #16"),
    _sig("dan-vfio-path-unresolved",
         r"failed to resolve VFIO device path for network interface",
         "error", "go", "The DAN VFIO NIC's /dev/vfio path could not be resolved",
         "kata-facts §4.3 #16"),
    _sig("dan-vfio-hotplug-failed",
         r"failed to hotplug VFIO device \"(?P<path>[^\"]*)\" for network interface "
         r"\"(?P<ifname>[^\"]*)\"",
         "error", "go", "Hot-plugging the DAN VFIO NIC failed", "kata-facts §4.3 #16"),
    _sig("dan-vfio-pci-path-missing",
         rf"PCI path for VFIO interface \"(?P<ifname>[^\"]*)\" \(BDF {_SHORT_BDF}\) not found after hotplug",
         "error", "go", "The hot-plugged DAN VFIO NIC did not show up in the guest",
         "kata-facts §4.3 #16"),
    # ---- #17: configuration errors --------------------------------------------------------------
    _sig("config-kata-conf-file-rejected",
         r"invalid KATA_CONF_FILE \"(?P<path>[^\"]*)\": only shipped Kata configuration files are accepted",
         "error", "any", "KATA_CONF_FILE names a file that is not a shipped default (Kata >= 4.0)",
         "kata-facts §1.1"),
    _sig("config-hot-cold-both-set",
         r"invalid hot-plug=(?P<hot_label>\S*) and cold-plug=(?P<cold_label>\S*) settings, "
         r"only one of them can be set",
         "error", "go",
         "Both cold_plug_vfio and hot_plug_vfio are set (Kata swaps the two labels)",
         "kata-facts §1.4"),
    _sig("config-invalid-vfio-port",
         r"invalid vfio_port=(?P<value>\S*) setting, allowed values no-port, bridge-port, "
         r"root-port, switch-port",
         "error", "go", "cold_plug_vfio/hot_plug_vfio has a value Kata does not know",
         "kata-facts §1.4"),
    _sig("config-clh-port-unsupported",
         r"(?:only (?:cold|hot)-plug=no-port or root-port supported on CLH|"
         r"cold-plug not supported on CLH|only hot-plug=root-port supported on CLH)",
         "error", "go", "Cloud Hypervisor supports only no-port or root-port",
         "kata-facts §1.4"),
    _sig("annotation-not-enabled",
         r"annotation (?P<key>io\.katacontainers\.config\.hypervisor\.\S+) is not enabled",
         "error", "go",
         "A pod annotation is not allowed by the handler's enable_annotations; sandbox refused",
         "kata-facts §1.5"),
    _sig("annotation-invalid-pcie-port",
         r"Invalid PCIe port \"(?P<value>[^\"]*)\" specified in annotation",
         "error", "go", "A cold/hot_plug_vfio pod annotation has an unknown value",
         "kata-facts §1.5"),
    _sig("pcie-ports-exceeded",
         r"Number of PCIe (?:Root|Switch) Ports exceeed allowed max of (?P<max>\d+)",
         "error", "go", "Too many PCIe root/switch ports requested", "kata-facts §1.4"),
    _sig("rs-pcie-ports-exceeded",
         r"(?:root|switch) ports allocated exceeds the max (?P<max>\d+)",
         "error", "rs", "Too many PCIe root/switch ports requested (annotation)",
         "kata-facts §1.5"),
    _sig("rs-root-and-switch-port",
         r"Root Port and Switch Port set at the same time is forbidden",
         "error", "rs", "pcie_root_port and pcie_switch_port are both set", "kata-facts §1.4"),
    _sig("rs-unsupported-cold-plug",
         r"unsupported cold_plug_vfio value \"(?P<value>[^\"]*)\"; only \"root-port\" is supported",
         "error", "rs", "runtime-rs cold plug (CDI/raw VFIO) supports only root-port",
         "kata-facts §1.4"),
    _sig("vfio-mode-unknown", r"Unknown VFIO mode (?P<value>\S+)", "error", "go",
         "vfio_mode is neither vfio nor guest-kernel", "kata-facts §1.3"),
    # ---- sysfs write errors while moving a VF ---------------------------------------------------
    _sig("sysfs-write-failed",
         r"(?:write|open) /sys/bus/pci/(?:devices/(?P<bdf>" + BDF_RE + r")/(?:driver_override|driver/unbind)"
         r"|drivers_probe|drivers/(?P<driver>[^/\s]+)/(?:bind|unbind|new_id|remove_id)): (?P<err>.+)",
         "error", "go", "A sysfs write that moves the VF failed", "kata-facts §4.3 (PathError)"),
    _sig("rs-sysfs-echo-failed", rf"Failed to echo {_SHORT_BDF} > (?P<path>\S+)",
         "error", "rs", "runtime-rs could not unbind the VF", "kata-facts §2.4"),
    # ---- #7, #8: the bind/unbind steps (info) ---------------------------------------------------
    _sig("vfio-bind-override",
         rf"(?:^Write vfio-pci to driver_override|echo vfio-pci > /sys/bus/pci/devices/{_BDF}/driver_override)",
         "info", "any", "Kata is moving the VF to vfio-pci (driver_override <- vfio-pci)",
         "kata-facts §4.3 #7/#8"),
    _sig("host-restore-override",
         r"(?:^Write (?P<driver>(?!vfio-pci\b)\S*) to driver_override|"
         r"echo (?P<rdriver>(?!vfio-pci\b)\S+) > /sys/bus/pci/devices/(?P<rbdf>" + BDF_RE + r")/driver_override)",
         "info", "any", "Kata is giving the VF back to its host driver (driver_override <- driver)",
         "kata-facts §4.3 #7/#8"),
    _sig("device-unbind",
         rf"(?:^Unbinding device from driver|^{_SHORT_BDF} is unbound from (?P<driver>\S+))",
         "info", "any", "Kata unbound the device from its current driver", "kata-facts §4.3 #7/#8"),
    _sig("drivers-probe",
         rf"(?:^Writing bdf to drivers-probe-path|echo (?P<bdf>{BDF_RE}) > /sys/bus/pci/drivers_probe)",
         "info", "any", "Kata asked the kernel to probe the device (drivers_probe)",
         "kata-facts §4.3 #7/#8"),
    _sig("vfio-unbind", rf"echo {_BDF} > /sys/bus/pci/drivers/vfio-pci/unbind",
         "info", "rs", "runtime-rs is unbinding the device from vfio-pci", "kata-facts §4.3 #8"),
    _sig("host-restore-start", rf"^bind {_BDF} to (?P<driver>\S+)",
         "info", "rs", "runtime-rs starts giving the VF back to its host driver",
         "kata-facts §4.3 #8"),
    _sig("host-driver-recorded", r"^host driver : (?P<driver>\S+)", "info", "rs",
         "runtime-rs recorded the VF's host driver", "kata-facts §4.3 #8"),
    _sig("already-on-vfio", rf"^bdf : {_BDF} was already bound to vfio-pci",
         "info", "rs", "The device was already on vfio-pci; runtime-rs wrote nothing",
         "kata-facts §2.4"),
    _sig("already-on-host", rf"^bdf {_BDF} was already unbound to host driver (?P<driver>\S+)",
         "info", "rs", "The device was already on its host driver; runtime-rs wrote nothing",
         "kata-facts §2.4"),
    _sig("vfio-bind-legacy",
         r"^(?:Writing vendor-device-id to vfio new-id path|Binding device to vfio driver)",
         "info", "go", "Kata 3.0-3.7 is moving the VF to vfio-pci (new_id/bind)",
         "kata-facts §2.3"),
    _sig("host-restore-legacy", r"^Binding back device to host driver", "info", "go",
         "Kata 3.0-3.7 is giving the VF back to its host driver", "kata-facts §2.3"),
    # ---- #9: lifecycle markers ----------------------------------------------------------------
    _sig("physical-iface-found", r"^Physical network interface found", "info", "go",
         "Kata classed a pod interface as a physical (VF) endpoint", "kata-facts §4.3 #9"),
    _sig("endpoint-attach", r"^Attaching endpoint", "info", "go",
         "Kata attaches a network endpoint", "kata-facts §4.3 #9"),
    _sig("endpoint-detach", r"^Detaching endpoint", "info", "go",
         "Kata detaches a network endpoint", "kata-facts §4.3 #9"),
    _sig("vfio-device-attach", r"^Attaching VFIO device", "info", "go",
         "Kata attaches a VFIO device to the VM", "kata-facts §4.3 #9"),
    _sig("vfio-group-attached", r"^Device group attached", "info", "go",
         "Kata attached a VFIO group", "kata-facts §4.3 #9"),
    _sig("vfio-coldplug-nothing-to-detach", r"^Nothing to detach\. VFIO device was cold plugged",
         "info", "go", "Cold-plugged VFIO device: nothing to hot-unplug", "kata-facts §4.3 #9"),
)

BY_ID: dict[str, Signature] = {s.id: s for s in CATALOGUE}
"""Signature by id."""
WRAPPERS = frozenset({"vfio-hotplug-failed"})
"""Signatures of a message that only wraps the real error (logged in its `error` field): the
error's own signature, when it has one, is the one reported."""

_BDF_FIELDS = ("device-bdf", "bdf", "BDF", "device_bdf", "host-bdf")
_GROUP_FIELDS = ("device-group", "group", "iommu_group")


def match(message: str, fields: dict[str, str] | None = None) -> SignatureMatch | None:
    """The first signature `message` matches, with extracted values; None when none does.

    `fields` are the line's structured fields (logfmt keys or journald fields) and fill what the
    message itself does not say (`device-bdf=...`, `device-group=/dev/vfio/N`).
    """
    for sig in CATALOGUE:
        m = sig.pattern.search(message)
        if m is not None:
            return _build(sig, m, fields or {})
    return None


def match_all(message: str, fields: dict[str, str] | None = None) -> list[SignatureMatch]:
    """Every signature `message` matches (normally one)."""
    out = []
    for sig in CATALOGUE:
        m = sig.pattern.search(message)
        if m is not None:
            out.append(_build(sig, m, fields or {}))
    return out


def _build(sig: Signature, m: re.Match[str], fields: dict[str, str]) -> SignatureMatch:
    groups = {k: v for k, v in m.groupdict().items() if v is not None}
    bdf = groups.get("bdf") or groups.get("rbdf")
    if bdf is None:
        for key in _BDF_FIELDS:
            if fields.get(key):
                bdf = fields[key]
                break
    if bdf is None:
        found = BDF_SEARCH.search(m.string)
        bdf = found.group(0) if found else None
    if bdf is None:  # QEMU names the device by its argument: `-device vfio-pci,host=01:00.0`
        found = _HOST_ARG.search(m.string)
        bdf = found.group(1) if found else None
    group: int | None = None
    graw = groups.get("group")
    if graw is None:
        for key in _GROUP_FIELDS:
            if fields.get(key):
                graw = fields[key].rsplit("/", 1)[-1]
                break
    if graw is not None and graw.isdigit():
        group = int(graw)
    driver = groups.get("driver") or groups.get("rdriver")
    return SignatureMatch(
        signature=sig,
        bdf=normalise_bdf(bdf) if bdf else None,
        iommu_group=group,
        ifname=groups.get("ifname") or fields.get("interface") or None,
        driver=driver or None,
        fields=tuple(sorted(groups.items())),
    )
