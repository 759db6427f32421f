"""Provides the facts of each Kata handler on a host tree for the exposure table, and its assessment.

Reads, under the root: the handlers and their effective configuration (`discovery.discover`,
or the Kata source's last discovery), each handler's Kata version and which source won
(`version.handler_version`), the PCI inventory (`sources.sysfs.scan`) and the SR-IOV device
plugin's configuration (`sources.sriovdp`), then hands them to the pure table
(`diag.core.kata_exposure.assess`). The runtime of a handler is the configuration's
(containerd's runtime_path or ConfigPath under `runtime-rs`), else the one its shim's install
path shows. Kata's binaries are read as files, never run.

`ExposureWatch` is the Kata source's memory between rounds: binaries are parsed again only
when their stat changes, package databases scanned again only when theirs does, and the
inventory and device-plugin configuration read again only when their fingerprint moves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from diag import events as ev
from diag.common.errors import RootError
from diag.common.paths import HostPaths
from diag.core import kata_exposure as kx
from diag.core import sriovdp
from diag.core.kata_exposure import Assessment, HandlerFacts, VfCandidate, assess
from diag.sources import sriovdp as dp_reader
from diag.sources import sysfs
from diag.sources.kata import discovery, effective, pkgdb
from diag.sources.kata import version as kversion
from diag.sources.kata.effective import RuntimeHandler

PASSING_ANNOTATIONS = ("*", "io.katacontainers.*", "io.katacontainers.config.*",
                       "io.katacontainers.config.hypervisor.*", effective.ANN_COLD)



def passes_kata_annotations(h: RuntimeHandler | None) -> bool:
    """containerd forwards pod annotations to the shim only when pod_annotations matches them."""
    return h is not None and any(p in PASSING_ANNOTATIONS for p in h.pod_annotations)


@dataclass(frozen=True, slots=True)
class HostExposure:
    """Every handler's facts and assessment, and the host-wide inputs they share."""

    facts: tuple[HandlerFacts, ...]
    assessments: tuple[Assessment, ...]
    versions: tuple[kversion.HandlerVersion, ...]
    dp_configs: tuple[sriovdp.DpConfig, ...]
    config_errors: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()
    """Host paths whose stat change can change a version reading."""


def vf_facts(devices: Sequence[ev.PciDevice],
             dp: Sequence[sriovdp.DpConfig]) -> tuple[tuple[VfCandidate, ...], str]:
    """The VFs pods can be given, and how they were chosen (pure)."""
    chosen, basis = sriovdp.vf_candidates(devices, dp)
    return tuple(VfCandidate(bdf=s.device.bdf, pf=s.device.pf, driver=s.device.driver,
                             netdevs=s.device.netdevs,
                             resource=s.resource.full_name if s.resource.name else "")
                 for s in chosen), basis


def facts_of(cfg: ev.KataConfig, hv: kversion.HandlerVersion | None, h: RuntimeHandler | None,
             vfs: tuple[VfCandidate, ...], vfs_basis: str) -> HandlerFacts:
    """One handler's facts from its effective configuration, its version readings and the VFs."""
    hv_runtime = hv.runtime if hv else ""
    runtime_path = h.runtime_path if h else ""
    runtime = cfg.runtime if (cfg.runtime == "rs" or runtime_path or not hv_runtime) else hv_runtime
    shim_path = hv.shim.path if hv else ""
    basis = ("containerd's runtime_path/ConfigPath" if runtime_path or cfg.runtime == "rs"
             else f"the shim's install path {shim_path}" if shim_path else "Kata's default (Go)")
    version = hv.version if hv else None
    base = HandlerFacts(handler=cfg.handler, runtime="rs" if runtime == "rs" else "go", runtime_basis=basis,
                        version=str(version) if version else "", version_source=hv.winner if hv else None,
                        readings=hv.readings if hv else ())
    enabled = (effective.annotation_enabled(cfg.enable_annotations, effective.ANN_COLD)
               and passes_kata_annotations(h))
    return kx.with_vfs(kx.with_config(base, cfg, annotation_enabled=enabled), vfs, vfs_basis)


@dataclass(slots=True)
class ExposureWatch:
    """What the exposure reads between rounds, so unchanged inputs are not read again."""

    binaries: kversion.BinaryCache = field(default_factory=kversion.BinaryCache)
    packages: pkgdb.ScanCache = field(default_factory=pkgdb.ScanCache)
    inventory_key: tuple[object, ...] | None = None
    devices: list[ev.PciDevice] = field(default_factory=list)
    dp_key: tuple[object, ...] | None = None
    dp: list[sriovdp.DpConfig] = field(default_factory=list)
    inventory_reads: int = 0

    def inventory(self, paths: HostPaths) -> list[ev.PciDevice]:
        """The PCI devices, scanned again only when a device or its driver changed."""
        key = inventory_signature(paths)
        if key != self.inventory_key:
            self.inventory_key = key
            self.inventory_reads += 1
            try:
                self.devices = sysfs.scan(paths, names=False)
            except RootError:
                self.devices = []
        return self.devices

    def plugin_configs(self, paths: HostPaths, comms: Mapping[int, str] | None) -> list[sriovdp.DpConfig]:
        key = dp_reader.signature(paths, comms)
        if key != self.dp_key:
            self.dp_key = key
            self.dp = dp_reader.read_configs(paths, comms)
        return self.dp


def inventory_signature(paths: HostPaths) -> tuple[object, ...]:
    """Each PCI device with its driver and netdevs: what makes a VF one pods can be given."""
    out: list[object] = []
    try:
        names = sorted(paths.listdir(sysfs.PCI_DEVICES))
    except OSError:
        return ()
    for bdf in names:
        try:
            with paths.opendir(f"{sysfs.PCI_DEVICES}/{bdf}") as d:
                try:
                    drv = d.link_name("driver")
                except OSError:
                    drv = None
                try:
                    net = tuple(sorted(d.listdir("net")))
                except OSError:
                    net = ()
                out.append((bdf, drv, net, d.exists("physfn")))
        except OSError:
            out.append((bdf, None))
    return tuple(out)


def host_exposure(paths: HostPaths, *, containerd_config: str | None = None,
                  devices: Sequence[ev.PciDevice] | None = None,
                  disc: discovery.Discovery | None = None,
                  watch: ExposureWatch | None = None,
                  comms: Mapping[int, str] | None = None,
                  log_readings: Sequence[ev.KataVersionReading] = ()) -> HostExposure:
    """The exposure of every Kata handler on the host tree under `paths`; `log_readings` are the
    versions Kata's own log lines gave (not exact: they win only when nothing else says)."""
    w = watch or ExposureWatch()
    disc = disc or discovery.discover(paths, containerd_config=containerd_config)
    if devices is None:
        devices = w.inventory(paths)
    dp = w.plugin_configs(paths, comms)
    vfs, basis = vf_facts(devices, dp)
    if not disc.installed:
        f = HandlerFacts(handler="default", assumed=True, vfs=vfs, vfs_basis=basis)
        return HostExposure((f,), (assess(f),), (), tuple(dp))
    handlers = {h.name: h for h in disc.containerd.handlers}
    shims = {}
    for load in disc.loads:
        rt = load.config.runtime if load.config else "go"
        h = handlers.get(load.handler) or RuntimeHandler(name=load.handler, runtime=rt)
        shims[load.handler] = (h, kversion.find_shim(paths, h))
    owned = [p for _h, s in shims.values() for p in (s.path, *s.chain) if p]
    packages = w.packages.scan(paths, owned)
    facts: list[HandlerFacts] = []
    versions: list[kversion.HandlerVersion] = []
    errors = [f"{e.where()}: {e.message}" for e in disc.errors]
    watched: list[str] = []
    for load in disc.loads:
        cfg = load.config
        if cfg is None:
            continue  # Kata would not load it: kata-config-invalid says why
        h, _shim = shims[load.handler]
        hv = kversion.handler_version(paths, h, packages=packages, cache=w.binaries, extra=log_readings)
        versions.append(hv)
        watched.extend(hv.watch)
        facts.append(facts_of(cfg, hv, handlers.get(load.handler), vfs, basis))
    return HostExposure(tuple(facts), tuple(assess(f) for f in facts), tuple(versions), tuple(dp),
                        tuple(errors), tuple(dict.fromkeys(watched)))
