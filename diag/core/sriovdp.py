"""Provides the SR-IOV network device plugin's configuration and its selection of VFs (pure).

The plugin (k8snetworkplumbingwg/sriov-network-device-plugin) reads `/etc/pcidp/config.json`
(`--config-file`): `{"resourceList": [{"resourceName", "resourcePrefix", "deviceType",
"selectors": {...} | [{...}, ...]}]}`. Go's encoding/json matches keys case-insensitively, so
`"IsRdma"` (as the SR-IOV operator writes it) is `isRdma`. This module mirrors what the plugin
does with it (pkg/netdevice/netDeviceProvider.go, pkg/resources/deviceSelectors.go):

- candidates are PCI devices of class 0x02 (network), except PFs with VFs configured;
- `deviceType` `netDevice` (the default) is the only type whose devices reach a pod as a network
  interface (the path where Kata's physical endpoint moves the VF); `accelerator` and
  `auxNetDevice` are not;
- selectors filter in the plugin's order: vendors, devices, drivers (exact strings),
  pciAddresses, pfNames and rootDevices (PF netdev name, case-insensitive, or PF address, with
  an optional `#<index>,<first>-<last>` VF range), linkTypes (not known here: not applied);
  an absent or empty selector keeps everything; a device is selected by the first selector
  object it matches.

A VF the plugin selects while it is on vfio-pci (`drivers: ["vfio-pci"]`) is handed to pods as a
VFIO device, not a network interface: it is reported apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diag import events as ev

NET_CLASS = "02"
SELECTOR_KEYS = ("vendors", "devices", "drivers", "pciAddresses", "acpiIndexes", "pfNames", "rootDevices",
                 "linkTypes", "ddpProfiles", "pKeys", "isRdma", "needVhostNet", "vdpaType", "auxTypes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Selector:
    """One selector object (lists empty when absent)."""

    vendors: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    pci_addresses: tuple[str, ...] = ()
    pf_names: tuple[str, ...] = ()
    root_devices: tuple[str, ...] = ()
    link_types: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()
    """Selectors this reader cannot evaluate from sysfs (acpiIndexes, ddpProfiles, pKeys, isRdma,
    vdpaType): a device is taken as matching them, and the finding says so."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """One resource pool of the plugin's configuration."""

    name: str
    prefix: str = "intel.com"
    device_type: str = "netDevice"
    selectors: tuple[Selector, ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.prefix}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DpConfig:
    """A parsed configuration, or why it could not be."""

    path: str
    resources: tuple[Resource, ...] = ()
    error: str = ""


def _ci(d: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in d.items()}


def _strs(v: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in v) if isinstance(v, list) else ()


def _selector(raw: Mapping[str, Any]) -> Selector:
    d = _ci(raw)
    unsupported = tuple(k for k in ("acpiIndexes", "ddpProfiles", "pKeys", "vdpaType")
                        if d.get(k.lower())) + (("isRdma",) if d.get("isrdma") is True else ())
    return Selector(vendors=_strs(d.get("vendors")), devices=_strs(d.get("devices")), drivers=_strs(d.get("drivers")),
                    pci_addresses=_strs(d.get("pciaddresses")), pf_names=_strs(d.get("pfnames")),
                    root_devices=_strs(d.get("rootdevices")), link_types=_strs(d.get("linktypes")),
                    unsupported=unsupported)


def parse_config(text: str, path: str) -> DpConfig:
    """The plugin's configuration; `error` names the file and what is wrong (JSON line and column)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return DpConfig(path=path, error=f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}")
    if not isinstance(data, Mapping):
        return DpConfig(path=path, error=f"{path}: not a JSON object")
    rl = _ci(data).get("resourcelist")
    if not isinstance(rl, list):
        return DpConfig(path=path, error=f"{path}: no resourceList")
    out = []
    for i, r in enumerate(rl):
        if not isinstance(r, Mapping):
            return DpConfig(path=path, error=f"{path}: resourceList[{i}] is not an object")
        d = _ci(r)
        sel = d.get("selectors")
        objs = [sel] if isinstance(sel, Mapping) else (sel if isinstance(sel, list) else [])
        out.append(Resource(name=str(d.get("resourcename", "")), prefix=str(d.get("resourceprefix") or "intel.com"),
                            device_type=str(d.get("devicetype") or "netDevice"),
                            selectors=tuple(_selector(o) for o in objs if isinstance(o, Mapping))))
    return DpConfig(path=path, resources=tuple(out))


def _in_range(index: int | None, spec: str) -> bool:
    """The `#0,2-7,9` part of a pfNames/rootDevices item (no `#`: every VF)."""
    if "#" not in spec:
        return True
    if index is None:
        return False
    fields = spec.split("#")
    if len(fields) != 2:
        return False
    for entry in fields[1].split(","):
        try:
            if "-" in entry:
                lo, hi = entry.split("-")
                if int(lo) <= index <= int(hi):
                    return True
            elif int(entry) == index:
                return True
        except ValueError:
            return False
    return False


def _pf_item(items: Sequence[str], key: str, *, fold: bool) -> str:
    for item in items:
        head = item.split("#")[0]
        if (head.lower() == key.lower()) if fold else head == key:
            return item
    return ""


def matches(sel: Selector, dev: ev.PciDevice, pf: ev.PciDevice | None) -> bool:
    """Whether one selector object keeps this device (the plugin's filters, in its order)."""
    if sel.vendors and dev.vendor not in sel.vendors:
        return False
    if sel.devices and dev.device not in sel.devices:
        return False
    if sel.drivers and (dev.driver or "") not in sel.drivers:
        return False
    if sel.pci_addresses and dev.bdf not in sel.pci_addresses:
        return False
    if sel.pf_names:
        names = pf.netdevs if pf else ()
        item = next((i for n in names if (i := _pf_item(sel.pf_names, n, fold=True))), "")
        if not item or not _in_range(dev.vf_index, item):
            return False
    if sel.root_devices:
        item = _pf_item(sel.root_devices, dev.pf or "", fold=False) if dev.pf else ""
        if not item or not _in_range(dev.vf_index, item):
            return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Selected:
    """A device the plugin would put in a pool."""

    device: ev.PciDevice
    resource: Resource
    as_netdev: bool
    """True when a pod gets it as a network interface (netDevice pool, not on vfio-pci)."""


def select(devices: Iterable[ev.PciDevice], configs: Iterable[DpConfig]) -> list[Selected]:
    """Every device a resource pool takes (first selector object wins, as the plugin does)."""
    devs = list(devices)
    by_bdf = {d.bdf: d for d in devs}
    cands = [d for d in devs if d.class_code[:2] == NET_CLASS
             and not (d.role == "pf" and (d.sriov_numvfs or 0) > 0)]
    out: list[Selected] = []
    taken: set[str] = set()
    for cfg in configs:
        for res in cfg.resources:
            if res.device_type not in ("netDevice", "accelerator", "auxNetDevice"):
                continue
            for sel in res.selectors:
                for d in cands:
                    if d.bdf in taken or not matches(sel, d, by_bdf.get(d.pf or "")):
                        continue
                    taken.add(d.bdf)
                    out.append(Selected(device=d, resource=res,
                                        as_netdev=res.device_type == "netDevice" and d.driver != "vfio-pci"))
    return out


HOST_NOT_NET = ("vfio-pci", "pci-stub", "uio_pci_generic", "igb_uio")
"""Drivers under which a VF has no host netdev: pods cannot get it as a network interface."""


def vf_candidates(devices: Iterable[ev.PciDevice],
                  configs: Sequence[DpConfig]) -> tuple[tuple[Selected, ...], str]:
    """The VFs pods can be given as network interfaces, and how they were chosen.

    With a readable device-plugin configuration: the VFs its netDevice pools select that sit on
    a host network driver. Without one: every VF on a host network driver (anything else could
    hand it to a pod, e.g. the host-device CNI).
    """
    devs = list(devices)
    good = [c for c in configs if not c.error]
    if good:
        sel = [s for s in select(devs, good) if s.as_netdev and s.device.role == "vf"]
        names = ", ".join(dict.fromkeys(s.resource.full_name for s in sel))
        where = ", ".join(c.path for c in good)
        basis = (f"selected by the SR-IOV device plugin ({where}): {names}" if sel else
                 f"the SR-IOV device plugin's pools ({where}) select no VF on a host network driver")
        return tuple(sel), basis
    vfs = [d for d in devs if d.role == "vf" and d.driver and d.driver not in HOST_NOT_NET]
    none = Resource(name="", prefix="")
    errors = "; ".join(c.error for c in configs if c.error)
    basis = "every VF on a host network driver (no SR-IOV device plugin configuration" + (
        f"; {errors}" if errors else "") + ")"
    return tuple(Selected(device=d, resource=none, as_netdev=True) for d in vfs), basis
