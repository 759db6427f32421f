"""Provides the Kata view of one moment: handlers, sandboxes with their VFs, and who holds VFIO groups.

One read of the host (the Kata source's own watcher, one forced round, no log following) joined
with the PCI scan: what `vfiowatch sandboxes` prints and what `snapshot` adds to each device
(its sandbox, pod and namespace).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diag import events as ev
from diag.common.paths import HostPaths
from diag.common.text import safe


@dataclass(frozen=True, slots=True)
class VfView:
    """A VF of a sandbox: what Kata recorded and what sysfs says now."""

    bdf: str
    host_driver: str | None
    """The driver Kata will give it back to (its original host driver), from Kata's state."""
    driver: str | None
    """Bound now."""
    netdevs: tuple[str, ...]
    iommu_group: int | None
    vfio_group_path: str | None
    held_by_vmm: bool
    """Whether the sandbox's VMM holds this VF's /dev/vfio/<group> open."""


@dataclass(slots=True)
class SandboxView:
    """One sandbox, as Kata's state, bundle and processes show it."""

    event: ev.SandboxStarted
    vfs: list[VfView] = field(default_factory=list)
    vmm_held: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    """(group, the devices in it) for each /dev/vfio/<group> the VMM holds open."""

    @property
    def sandbox_id(self) -> str:
        return self.event.sandbox_id

    def bdfs(self) -> set[str]:
        """Every device of the sandbox: its VFs, the VMM's vfio-pci devices and held groups."""
        out = {v.bdf for v in self.vfs} | set(self.event.vmm_vfio_devices)
        for _group, members in self.vmm_held:
            out.update(members)
        return out


@dataclass(slots=True)
class KataView:
    handlers: list[ev.KataConfig]
    sandboxes: list[SandboxView]
    problems: list[str]
    """Invalid configurations, unreadable state files, paths refused under --root."""
    holders: dict[int, tuple[int, ...]]
    """VFIO group -> pids holding /dev/vfio/<group> open."""

    def by_device(self) -> dict[str, SandboxView]:
        """PCI address -> the sandbox using it."""
        out: dict[str, SandboxView] = {}
        for sb in self.sandboxes:
            for bdf in sb.bdfs():
                out.setdefault(bdf, sb)
        return out


def origin(cfg: ev.KataConfig | ev.SandboxStarted, key: str = "cold_plug_vfio") -> str:
    """Where a setting's effective value came from (`file:...`, `drop-in:...`, `default`)."""
    return next((s.origin for s in cfg.settings if s.key == key), "default")


def short_origin(cfg: ev.KataConfig) -> str:
    """The origin for a table: `file` when it is the handler's own file (shown beside it)."""
    o = origin(cfg)
    if cfg.path and o == f"file:{cfg.path}":
        return "file"
    kind, sep, where = o.partition(":")
    return f"{kind} {where}" if sep else o


def read(paths: HostPaths, devices: Sequence[ev.PciDevice]) -> KataView:
    """One forced round of the Kata watcher (no journal, no kmsg) joined with `devices`."""
    from diag.sources.kata.source import KataWatcher

    w = KataWatcher(paths, {"journal": False, "kmsg": False})
    try:
        events = w.step(time.time_ns(), force=True)
    finally:
        w.close()
    problems = []
    for e in events:
        if isinstance(e, ev.KataConfigInvalid):
            where = f"{e.path}:{e.line}" if e.line else e.path
            problems.append(f"{where}: {e.message}")
        elif isinstance(e, ev.DecodeFailed):
            problems.append(e.reason)
    by_bdf = {d.bdf: d for d in devices}
    sandboxes = []
    for _sid, started in sorted(w.sandboxes.items()):
        sb = SandboxView(started)
        held = {g for g, pids in w.holders.items() if started.vmm_pid in pids}
        for g in sorted(held):
            sb.vmm_held.append((g, tuple(d.bdf for d in devices if d.iommu_group == g)))
        for vf in started.vfs:
            d = by_bdf.get(vf.bdf)
            group = d.iommu_group if d else None
            sb.vfs.append(VfView(
                bdf=vf.bdf, host_driver=vf.host_driver, driver=d.driver if d else None,
                netdevs=d.netdevs if d else (), iommu_group=group,
                vfio_group_path=d.vfio_group_path if d else None,
                held_by_vmm=group is not None and group in held))
        sandboxes.append(sb)
    handlers = sorted(w.configs.values(), key=lambda c: c.handler)
    return KataView(handlers=handlers, sandboxes=sandboxes, problems=problems,
                    holders=dict(w.holders))


# ---- the table's columns: one line each (a later column, e.g. an exposure, is one more line) --

Column = tuple[str, Callable[[Any], str]]

HANDLER_COLUMNS: list[Column] = [
    ("HANDLER", lambda c: c.handler),
    ("RUNTIME", lambda c: "runtime-rs" if c.runtime == "rs" else c.runtime),
    ("COLD_PLUG_VFIO", lambda c: c.cold_plug_vfio + (" (assumed)" if c.assumed else "")),
    ("FROM", short_origin),
    ("CONFIG", lambda c: c.path or "(none: Kata's built-in defaults)"),
]
"""The handler table of `vfiowatch sandboxes`: (header, value of an ev.KataConfig)."""

SANDBOX_COLUMNS: list[Column] = [
    ("SANDBOX", lambda s: s.sandbox_id[:12]),
    ("RUNTIME", lambda s: "runtime-rs" if s.event.runtime == "rs" else s.event.runtime),
    ("HANDLER", lambda s: s.event.handler or "-"),
    ("NAMESPACE", lambda s: s.event.pod_namespace or "-"),
    ("POD", lambda s: s.event.pod or "-"),
    ("COLD_PLUG_VFIO", lambda s: s.event.cold_plug_vfio),
    ("QEMU", lambda s: "-" if s.event.vmm_pid is None else str(s.event.vmm_pid)),
    ("VFS", lambda s: str(len(s.vfs))),
    ("STATE", lambda s: "no state file (creation failed?)" if not s.event.state_file
     else "refused: " + s.event.refused if s.event.refused else "running"),
]
"""The sandbox table of `vfiowatch sandboxes`: (header, value of a SandboxView)."""


def table(rows: Sequence[Any], columns: Sequence[Column]) -> list[str]:
    """Left-aligned columns, every cell escaped."""
    cells = [[safe(fn(r)) for _h, fn in columns] for r in rows]
    header = [h for h, _fn in columns]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in [header, *cells]]
