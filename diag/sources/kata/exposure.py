"""Provides the facts of each Kata handler on a host tree for the exposure table, and its assessment.

Reads, under the root: the handlers and their effective configuration (`config.discover`), each
handler's Kata version and which source won (`version.handler_version`), the PCI inventory
(`sources.sysfs.scan`) and the SR-IOV device plugin's configuration (`sources.sriovdp`), then
hands them to the pure table (`diag.core.kata_exposure.assess`). The runtime of a handler is the
configuration's (containerd's runtime_path or ConfigPath under `runtime-rs`), else the one its
shim's install path shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from diag import events as ev
from diag.core import sriovdp
from diag.core.kata_exposure import Assessment, HandlerFacts, VfCandidate, assess
from diag.errors import RootError
from diag.paths import HostPaths
from diag.sources import sriovdp as dp_reader
from diag.sources import sysfs
from diag.sources.kata import config as kconfig
from diag.sources.kata import pkgdb
from diag.sources.kata import version as kversion
from diag.sources.kata.config import RuntimeHandler


def _origin(cfg: ev.KataConfig, key: str) -> str:
    return next((s.origin for s in cfg.settings if s.key == key), "default")


def _passes_kata_annotations(h: RuntimeHandler | None) -> bool:
    """containerd forwards pod annotations to the shim only when pod_annotations matches them."""
    if h is None:
        return False
    return any(p in ("*", "io.katacontainers.*", "io.katacontainers.config.*",
                     "io.katacontainers.config.hypervisor.*", kconfig.ANN_COLD) for p in h.pod_annotations)


@dataclass(frozen=True, slots=True)
class HostExposure:
    """Every handler's facts and assessment, and the host-wide inputs they share."""

    facts: tuple[HandlerFacts, ...]
    assessments: tuple[Assessment, ...]
    versions: tuple[kversion.HandlerVersion, ...]
    dp_configs: tuple[sriovdp.DpConfig, ...]
    config_errors: tuple[str, ...] = ()


def host_exposure(paths: HostPaths, *, containerd_config: str | None = None,
                  devices: Sequence[ev.PciDevice] | None = None,
                  cache: kversion.BinaryCache | None = None) -> HostExposure:
    """The exposure of every Kata handler on the host tree under `paths`."""
    disc = kconfig.discover(paths, containerd_config=containerd_config)
    if devices is None:
        try:
            devices = sysfs.scan(paths, names=False)
        except RootError:
            devices = []
    dp = dp_reader.read_configs(paths)
    chosen, basis = sriovdp.vf_candidates(devices, dp)
    vfs = tuple(VfCandidate(bdf=s.device.bdf, pf=s.device.pf, driver=s.device.driver, netdevs=s.device.netdevs,
                            resource=s.resource.full_name if s.resource.name else "") for s in chosen)
    if not disc.installed:
        f = HandlerFacts(handler="default", assumed=True, vfs=vfs, vfs_basis=basis)
        return HostExposure((f,), (assess(f),), (), tuple(dp))
    handlers = {h.name: h for h in disc.containerd.handlers}
    cache = cache or kversion.BinaryCache()
    shims = {}
    for load in disc.loads:
        rt = load.config.runtime if load.config else "go"
        h = handlers.get(load.handler) or RuntimeHandler(name=load.handler, runtime=rt)
        shims[load.handler] = (h, kversion.find_shim(paths, h))
    owned = [p for _h, s in shims.values() for p in (s.path, *s.chain) if p]
    packages = pkgdb.scan(paths, owned)
    facts: list[HandlerFacts] = []
    versions: list[kversion.HandlerVersion] = []
    errors = [f"{e.where()}: {e.message}" for e in disc.errors]
    for load in disc.loads:
        cfg = load.config
        if cfg is None:
            continue  # Kata would not load it: kata-config-invalid says why
        h, _shim = shims[load.handler]
        hv = kversion.handler_version(paths, h, packages=packages, cache=cache)
        versions.append(hv)
        runtime = cfg.runtime if (cfg.runtime == "rs" or h.runtime_path or not hv.runtime) else hv.runtime
        basis_rt = ("containerd's runtime_path/ConfigPath" if h.runtime_path or cfg.runtime == "rs"
                    else f"the shim's install path {hv.shim.path}" if hv.shim.path else "Kata's default (Go)")
        facts.append(HandlerFacts(
            handler=load.handler, runtime="rs" if runtime == "rs" else "go", runtime_basis=basis_rt,
            version=hv.version, version_source=hv.winner, readings=hv.readings, config_path=cfg.path,
            cold_plug_vfio=cfg.cold_plug_vfio, cold_plug_origin=_origin(cfg, "cold_plug_vfio"),
            hot_plug_vfio=cfg.hot_plug_vfio, pcie_root_port=cfg.pcie_root_port,
            pcie_root_port_origin=_origin(cfg, "pcie_root_port"), hypervisor=cfg.hypervisor,
            annotation_enabled=(kconfig.annotation_enabled(cfg.enable_annotations, kconfig.ANN_COLD)
                                and _passes_kata_annotations(handlers.get(load.handler))),
            vfs=vfs, vfs_basis=basis))
    return HostExposure(tuple(facts), tuple(assess(f) for f in facts), tuple(versions), tuple(dp),
                        tuple(errors))
