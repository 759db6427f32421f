"""Provides rule `kata-known-error`: a Kata/QEMU/kernel line matched a known failure signature.

The signature ids come from the Kata log catalogue (diag.sources.kata.signatures, a public
contract). The line is linked to the device episode by BDF, else by sandbox (its VFs, or the
episode whose actor named the sandbox; containerd's lines name the pod, whose sandbox it is),
else by IOMMU group, so the finding shows the move that led to the failure. Informational lines (the bind/unbind steps) never open a finding; they only
join the episode as evidence. A finding resolves when its sandbox stops, its VF returns to a
host driver, or the line has not repeated for CoreConfig.known_error_ttl_ns.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from diag import events as ev
from diag.core.episodes import VFIO_DRIVER
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule, Timers, device_label
from diag.core.thresholds import NS, CoreConfig
from diag.events import replace

_C, _E, _W = ev.Severity.CRITICAL, ev.Severity.ERROR, ev.Severity.WARNING
COLDPLUG_REMEDY = ('Set cold_plug_vfio = "root-port" with pcie_root_port >= 1, or run the Kata Go '
                   "runtime >= 3.9 (it refuses such pods before touching the VF); then give the "
                   "VF back to its host driver.")
RESTORE = ("Give the VF back to its host driver once no VMM holds its VFIO group: echo <driver> > "
           "/sys/bus/pci/devices/<BDF>/driver_override; echo <BDF> > "
           "/sys/bus/pci/drivers/vfio-pci/unbind; echo <BDF> > /sys/bus/pci/drivers_probe.")

KNOWN: dict[str, tuple[ev.Severity, str, str]] = {
    "qemu-bus-not-found": (
        _C, "QEMU refused the VF: with cold_plug_vfio=no-port Kata gives it bus "
            "<unknown PCIePortBusPrefix: >0, which does not exist (Kata #10162); the VM did not "
            "start and the VF was left on vfio-pci.", COLDPLUG_REMEDY),
    "qmp-bus-not-found": (_E, "QEMU could not hot-plug a device: its PCIe bus does not exist.",
                          "Set hot_plug_vfio (root-port) with pcie_root_port >= 1."),
    "port-not-set": (
        _E, "Kata moved the VF to vfio-pci, then failed because no cold/hot-plug port is set "
            "(Kata 3.2.x, or the HotAttach path); the VF may stay on vfio-pci (Kata #9014).",
        'Upgrade Kata (>= 3.3) and set cold_plug_vfio = "root-port". ' + RESTORE),
    "coldplug-disabled-refusal": (
        _W, "Kata (>= 3.9) refused a VF pod because cold_plug_vfio is no-port; the VF was not "
            "moved, but the pod cannot start.",
        'Set cold_plug_vfio = "root-port" with pcie_root_port >= 1 for this runtime handler.'),
    "vfio-group-not-viable": (
        _E, "Another device of the VF's IOMMU group is not on vfio-pci, so QEMU cannot use it.",
        "Bind every member of the IOMMU group to vfio-pci (Kata passes the whole group)."),
    "vfio-group-not-viable-hint": (
        _E, "QEMU's follow-up line to `group N is not viable`.",
        "Bind every member of the IOMMU group to vfio-pci."),
    "vfio-group-multiple-address-spaces": (
        _E, "QEMU could not attach the VFIO group: it is used in multiple address spaces.",
        "Pass the group to one VM only; see Kata #10622."),
    "iommu-group-missing": (
        _E, "The VF has no IOMMU group (IOMMU off); Kata already unbound it from its driver.",
        "Enable the IOMMU (intel_iommu=on / amd_iommu=on) and reboot. " + RESTORE),
    "iommu-not-enabled": (_E, "The host IOMMU is not enabled; VFIO passthrough cannot work.",
                          "Enable the IOMMU on the kernel command line and reboot."),
    "vfio-group-path-missing": (_E, "runtime-rs found no IOMMU group for the device.",
                                "Check the IOMMU and that the VF is on vfio-pci."),
    "iommu-group-device-missing": (_E, "The device is not listed in its IOMMU group.",
                                   "Check /sys/kernel/iommu_groups/<N>/devices."),
    "vfio-device-request": (
        _W, "An unbind from vfio-pci waits for the process holding the VFIO group (QEMU); the "
            "restore stalls (Kata #13837).", "Stop the VMM that holds the group; then probe the VF."),
    "vfio-device-request-blocked": (
        _W, "An unbind from vfio-pci is blocked until the holder closes the VFIO group.",
        "Stop the VMM that holds the group; then probe the VF."),
    "error-removing-endpoint": (
        _E, "Kata could not give the VF back to its host driver at teardown; it may be left on "
            "vfio-pci or without a driver.", RESTORE),
    "create-rollback": (
        _W, "Sandbox creation failed; Kata restores only the endpoints it had recorded, so a VF "
            "bound before the failure can stay on vfio-pci (Kata PR #13790).", RESTORE),
    "rs-detach-endpoint-failed": (_E, "runtime-rs could not give the VF back to its host driver.",
                                  RESTORE),
    "rs-bind-to-vfio-failed": (_E, "runtime-rs failed moving the VF to vfio-pci.", RESTORE),
    "rs-bind-to-host-failed": (_E, "runtime-rs failed moving the VF back to its host driver.",
                               RESTORE),
    "cannot-start-vm": (_E, "The VM did not start (often QEMU exiting on a bus or IOMMU-group "
                            "error logged just before).", "See the QEMU line in the evidence."),
    "qemu-launch-failed": (_E, "QEMU could not be launched.", "See the error in the line."),
    "qmp-connect-failed": (_E, "Kata could not reach QEMU's QMP socket (QEMU may have exited).",
                           "See the QEMU lines logged just before."),
    "qemu-exited-error": (_E, "QEMU exited with an error.", "See the QEMU lines logged just before."),
    "dan-vfio-no-hotplug-port": (_E, "A DAN VFIO NIC needs hot_plug_vfio set.",
                                 'Set hot_plug_vfio = "root-port" with pcie_root_port >= 1.'),
    "dan-vfio-path-unresolved": (_E, "The DAN VFIO NIC's /dev/vfio path could not be resolved.",
                                 "Check that the VF is on vfio-pci with an IOMMU group."),
    "dan-vfio-hotplug-failed": (_E, "Hot-plugging the DAN VFIO NIC failed.", "See the error."),
    "dan-vfio-pci-path-missing": (_E, "The hot-plugged DAN VFIO NIC did not show up in the guest.",
                                  "See the guest kernel log."),
    "sysfs-write-failed": (_E, "A sysfs write of the VF move failed; the VF may be half-moved.",
                           RESTORE),
    "vfio-hotplug-failed": (_E, "Hot-plugging a VFIO device into the VM failed.",
                            "See the error in the line."),
    "vfio-open-failed": (
        _E, "QEMU could not open the VF's VFIO group: with Operation not permitted the device "
            "cgroup denies it (sandbox_cgroup_only, Kata runtime#2774), with No such file the "
            "group node is gone.",
        "Allow /dev/vfio/<group> in the sandbox's device cgroup (or sandbox_cgroup_only = "
        "false), and check that the VF is on vfio-pci."),
    "vfio-bar-reserve-failed": (
        _W, "vfio-pci could not reserve one of the device's BARs: another driver or the firmware "
            "holds that memory range.", "Check /proc/iomem for the range; boot with the device "
            "bound to vfio-pci before any other driver claims it."),
    "qemu-bar-mmap-failed": (_W, "QEMU could not map one of the device's BARs (slower, not fatal).",
                             "See the kernel's BAR lines for the same device."),
    "qmp-device-not-found": (
        _E, "QEMU lost the hot-plugged VFIO device: often a group holding PCIe bridges that were "
            "passed too (Kata #2938), or a hot-plug racing the guest.",
        "Pass only the group's endpoints (bridges stay on the host), or cold-plug the device."),
    "qmp-bus-no-hotplug": (
        _E, "QEMU cannot hot-plug onto that bus (a PCI bridge without SHPC, or the root bus).",
        'Use PCIe root ports: hot_plug_vfio = "root-port" with pcie_root_port >= 1.'),
    "agent-pci-translate-failed": (
        _E, "The Kata agent found no guest PCI address for the host device, so the container "
            "did not start (vfio_mode, or the PCI path mapping; Kata #4091, #9614).",
        "Check vfio_mode (guest-kernel for a VF used as a NIC) and upgrade Kata (>= 3.5 maps "
        "both vfio-pci and vfio-pci-gk devices)."),
    "dragonball-vfio-create-failed": (
        _E, "Dragonball could not create the VFIO device (NoResource: the host's physical "
            "address width is too small for its MMIO window, Kata #9509).",
        "See Kata #9509; use QEMU on this host."),
    "dragonball-vfio-add-failed": (
        _E, "Dragonball refused to add the VFIO device (InvalidOperation: PCI hot-plug is not "
            "enabled in its VM configuration, Kata #9129).", "See Kata #9129."),
    "dragonball-pci-hotplug-unsupported": (
        _E, "The runtime-rs configuration asks Dragonball for PCI hot-plug options it does not "
            "have (Kata #6424).", "Remove the PCI hot-plug options from the Dragonball "
            "configuration."),
    "clh-vfio-failed": (
        _E, "Cloud Hypervisor's VFIO device failed (e.g. guest memory could not be added to the "
            "IOMMU table).", "See the error; give the host more memory or check the IOMMU."),
    "cni-vf-netdev-missing": (
        _W, "The CNI found no netdev for the VF: it is on vfio-pci (on purpose, or left there by "
            "a failed Kata sandbox, PR #13790).", RESTORE),
    "rs-sysfs-echo-failed": (_E, "A sysfs write of the VF move failed (runtime-rs).", RESTORE),
}
"""Signature id -> (severity, what it means, remedy). Configuration errors (`config-*`,
`annotation-*`, ...) are raised by `kata-config-invalid`; other ids not listed here open a
warning when logged at error level."""

NO_PORT_BUS = "<unknown PCIePortBusPrefix: >"
"""The bus name Kata gives a cold-plugged VF when cold_plug_vfio = no-port (Kata #10162)."""
OTHER_BUS = (
    _E, "QEMU could not find the PCIe bus the VF was to be plugged on: no such root or switch "
        "port was created (pcie_root_port = 0, or hotplug_vfio_on_root_bus without root ports).",
    'Give the VM root ports: pcie_root_port >= 1 with cold_plug_vfio (or hot_plug_vfio) = '
    '"root-port".')
"""qemu-bus-not-found for a named bus (`rp0`): a missing root port, not the #10162 case."""

_CONFIG_PREFIXES = ("config-", "annotation-", "pcie-ports-", "rs-pcie-ports-", "rs-root-and-",
                    "rs-unsupported-cold-plug", "vfio-mode-unknown")


def _headline(meaning: str) -> str:
    """A meaning's first clause, for the summary (a few dozen meanings: each cut once)."""
    cut = _HEADLINES.get(meaning)
    if cut is None:
        cut = _HEADLINES[meaning] = meaning.split(";")[0].rstrip(".")
    return cut


_HEADLINES: dict[str, str] = {}


@register
class KataKnownError(ConditionRule):
    """Open per (signature, device or sandbox) on a line matching a known failure signature."""

    id = "kata-known-error"
    events = (ev.LogLineMatched, ev.SandboxStopped, ev.DeviceBound, ev.DeviceRemoved)
    ticks = True

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.timers = Timers()
        self.count: dict[str, int] = {}
        self.by_sandbox: dict[str, list[str]] = {}

    def _classify(self, e: ev.LogLineMatched) -> tuple[ev.Severity, str, str] | None:
        if e.signature == "qemu-bus-not-found" and NO_PORT_BUS not in e.text:
            return OTHER_BUS
        known = KNOWN.get(e.signature)
        if known is not None:
            return known
        if e.signature.startswith(_CONFIG_PREFIXES):
            return None
        if e.level.lower() in ("error", "fatal", "panic", "crit", "critical", "err", "emerg", "alert"):
            return (_W, "A Kata/QEMU line at error level matched a catalogued signature.",
                    "See the line and the Kata documentation for its signature.")
        return None

    # One method per event kind (the correlator calls them directly; `on_event` dispatches).

    def on_log_line_matched(self, model: Model, event: ev.LogLineMatched) -> list[ev.Finding]:
        return self._line(model, event)

    def on_sandbox_stopped(self, model: Model, event: ev.SandboxStopped) -> list[ev.Finding]:
        keys = self.by_sandbox.pop(event.sandbox_id, [])
        return self._resolve(keys, event.ts_ns, f"sandbox {event.sandbox_id[:12]} is gone")

    def on_device_bound(self, model: Model, event: ev.DeviceBound) -> list[ev.Finding]:
        bdf = event.bdf
        if bdf not in self._by_bdf or event.driver == VFIO_DRIVER:
            return []
        return self._resolve(self.keys_for(bdf), event.ts_ns,
                             f"the VF returned to host driver {event.driver}")

    def on_device_removed(self, model: Model, event: ev.DeviceRemoved) -> list[ev.Finding]:
        if event.bdf not in self._by_bdf:
            return []
        return self._resolve(self.keys_for(event.bdf), event.ts_ns, "the device was removed")

    def _resolve(self, keys: Sequence[str], ts_ns: int, why: str) -> list[ev.Finding]:
        for k in keys:
            self.timers.cancel(k)
            self.count.pop(k, None)
        return self.resolve_all(keys, ts_ns, why)

    def _line(self, model: Model, e: ev.LogLineMatched) -> list[ev.Finding]:
        cls = self._classify(e)
        if cls is None:
            return []
        severity, meaning, remedy = cls
        sid_named = model.sandbox_of_line(e)
        if sid_named != e.sandbox_id:  # a containerd line naming the pod, not the sandbox
            e = replace(e, sandbox_id=sid_named)
        targets = model.log_targets(e)
        bdf = targets[0] if targets else e.bdf
        scope = bdf or (f"sandbox-{e.sandbox_id}" if e.sandbox_id else
                        f"group{e.iommu_group}" if e.iommu_group is not None else
                        f"host-{zlib.crc32(e.origin.encode()):08x}")
        key = f"{e.signature}:{scope}"
        self.timers.set(key, e.ts_ns + self.config.known_error_ttl_ns)
        n = self.count[key] = self.count.get(key, 0) + 1
        ep = model.episode(bdf) if bdf else None
        sb = model.sandboxes.get(e.sandbox_id) if e.sandbox_id else None
        if sb is None and bdf:
            sb = model.sandbox_for(bdf)
        labels = (("signature", e.signature), ("count", str(n)),
                  ("devices", ",".join(targets)), ("origin", e.origin),
                  ("episode", ep.episode_id if ep else ""))
        if key in self.open_:
            f = self.update(key, e.ts_ns, labels=labels)
            return [f] if f is not None else []
        evidence = ep.evidence() if ep is not None else (
            ev.Evidence(ts_ns=e.ts_ns, source=e.source, kind=e.kind, text=e.text),)
        where = device_label(model, bdf) if bdf else (
            f"sandbox {e.sandbox_id[:12]}" if e.sandbox_id else "the host")
        own = model.owner(bdf, ep) if bdf else None
        sid = e.sandbox_id or (sb.sandbox_id if sb else None) or (own.sandbox_id if own else None)
        if sid:
            self.by_sandbox.setdefault(sid, []).append(key)
        return [self.open(
            model, key, ts_ns=e.ts_ns, trigger_ns=e.ts_ns, bdf=bdf, episode=ep,
            severity=severity, summary=f"{where}: {e.signature}: {_headline(meaning)}",
            explanation=f"{meaning} Line ({e.origin or e.source}): {e.text}",
            remedy=remedy.replace("<BDF>", bdf) if bdf else remedy,
            sandbox_id=sid, pod=sb.pod if sb else (own.pod if own else None),
            pod_namespace=sb.pod_namespace if sb else (own.pod_namespace if own else None),
            actor=own.actor if own else None, labels=labels,
            **({} if ep is not None else {"evidence": evidence}),
        )]

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        due = self.timers.pop_due(now_ns)
        if not due:
            return []
        gone = set(due)
        for k in due:
            self.count.pop(k, None)
        for sid in [s for s, keys in self.by_sandbox.items() if gone.intersection(keys)]:
            left = [k for k in self.by_sandbox[sid] if k not in gone]
            if left:
                self.by_sandbox[sid] = left
            else:
                del self.by_sandbox[sid]
        secs = self.config.known_error_ttl_ns // NS
        return self.resolve_all(due, now_ns, f"the line has not repeated for {secs}s")
