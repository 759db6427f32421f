"""Provides rule `kata-config-invalid`: a Kata configuration Kata itself would reject.

Two inputs: KataConfigInvalid events (the Kata source read a file or a pod annotation that
Kata refuses, with Kata's own error text), and the core's own check of every
KataConfigLoaded against Kata's checkPCIeConfig / createPCIeTopology rules (kata-facts §1.4),
with the same texts, so both agree on one finding. Resolves when the file is loaded again
without the error, or when the sandbox whose annotation was refused is gone.
"""

from __future__ import annotations

import zlib

from diag import events as ev
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule
from diag.core.thresholds import CoreConfig

PORTS = ("bridge-port", "root-port", "switch-port")
MAX_PORTS = 16


def kata_would_reject(c: ev.KataConfig) -> list[tuple[str, str]]:
    """(key, Kata's error text) for every VFIO/PCIe setting Kata refuses at load time."""
    if c.assumed:
        return []
    out: list[tuple[str, str]] = []
    cold = c.cold_plug_vfio or "no-port"
    hot = c.hot_plug_vfio or "no-port"
    if c.runtime == "rs":
        if c.pcie_root_port > 0 and c.pcie_switch_port > 0:
            out.append(("pcie_root_port",
                        "Root Port and Switch Port set at the same time is forbidden."))
        if c.pcie_root_port > MAX_PORTS:
            out.append(("pcie_root_port", f"root ports allocated exceeds the max {MAX_PORTS}"))
        if c.pcie_switch_port > MAX_PORTS:
            out.append(("pcie_switch_port", f"switch ports allocated exceeds the max {MAX_PORTS}"))
        return out
    if c.pcie_root_port > MAX_PORTS:
        out.append(("pcie_root_port",
                    f"Number of PCIe Root Ports exceeed allowed max of {MAX_PORTS}"))
    if c.pcie_switch_port > MAX_PORTS:
        out.append(("pcie_switch_port",
                    f"Number of PCIe Switch Ports exceeed allowed max of {MAX_PORTS}"))
    if c.hypervisor not in ("qemu", "clh"):
        return out
    if cold != "no-port" and hot != "no-port":
        # Kata passes (coldPlug, hotPlug) to a format that labels them the other way round.
        out.append(("cold_plug_vfio", f"invalid hot-plug={cold} and cold-plug={hot} settings, "
                                      "only one of them can be set"))
        return out
    if cold == "no-port" and hot == "no-port":
        return out
    if c.machine_type and c.machine_type not in ("q35", "virt"):
        return out
    if c.hypervisor == "clh":
        if cold not in ("no-port", "root-port"):
            out.append(("cold_plug_vfio", "only cold-plug=no-port or root-port supported on CLH"))
        if hot not in ("no-port", "root-port"):
            out.append(("hot_plug_vfio", "only hot-plug=no-port or root-port supported on CLH"))
        return out
    port = cold if cold != "no-port" else hot
    if port not in PORTS:
        # The %s is always the cold-plug value in Kata's message.
        out.append(("cold_plug_vfio" if cold != "no-port" else "hot_plug_vfio",
                    f"invalid vfio_port={cold} setting, allowed values no-port, bridge-port, "
                    "root-port, switch-port"))
    return out


def _key(path: str, message: str, sandbox_id: str | None) -> str:
    text = f"{path}|{message}|{sandbox_id or ''}"
    return f"{zlib.crc32(text.encode()):08x}"


@register
class KataConfigInvalidRule(ConditionRule):
    """Open per (file or sandbox, message) that Kata would reject."""

    id = "kata-config-invalid"
    events = (ev.KataConfigInvalid, ev.KataConfigLoaded, ev.SandboxStopped)

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.by_path: dict[str, set[str]] = {}
        self.by_sandbox: dict[str, set[str]] = {}
        self.opened_ns: dict[str, int] = {}

    def on_event(self, model: Model, event: ev.Event) -> list[ev.Finding]:
        if isinstance(event, ev.KataConfigInvalid):
            return self._invalid(model, event.ts_ns, event.path, event.message, event.handler,
                                 event.key, event.line, event.sandbox_id, event)
        if isinstance(event, ev.SandboxStopped):
            keys = self.by_sandbox.pop(event.sandbox_id, set())
            for k in keys:
                self.opened_ns.pop(k, None)
                for keys_of_path in self.by_path.values():
                    keys_of_path.discard(k)
            return self.resolve_all(sorted(keys), event.ts_ns,
                                    f"sandbox {event.sandbox_id[:12]} is gone")
        if not isinstance(event, ev.KataConfigLoaded):
            return []
        c = event.config
        path = c.path or f"<handler {c.handler}>"
        problems = kata_would_reject(c)
        out: list[ev.Finding] = []
        now = {_key(path, msg, None) for _, msg in problems}
        # A reload without the problem ends it; a first load at the same instant as the
        # source's KataConfigInvalid does not (the source reports both in one scan).
        for p in (path, *c.dropins):
            for k in sorted(self.by_path.get(p, set()) - now):
                if event.ts_ns > self.opened_ns.get(k, event.ts_ns):
                    self.by_path[p].discard(k)
                    self.opened_ns.pop(k, None)
                    out.extend(self.resolve_all([k], event.ts_ns,
                                                f"{p} was loaded again without the error"))
        for key, msg in problems:
            out.extend(self._invalid(model, event.ts_ns, path, msg, c.handler, key, None,
                                     None, event))
        return out

    def _invalid(self, model: Model, ts_ns: int, path: str, message: str, handler: str | None,
                 key: str | None, line: int | None, sandbox_id: str | None,
                 event: ev.Event) -> list[ev.Finding]:
        k = _key(path, message, sandbox_id)
        if k in self.open_:
            return []
        self.opened_ns[k] = ts_ns
        self.by_path.setdefault(path, set()).add(k)
        if sandbox_id:
            self.by_sandbox.setdefault(sandbox_id, set()).add(k)
        where = path + (f":{line}" if line else "") + (f" [{key}]" if key else "")
        sb = model.sandboxes.get(sandbox_id) if sandbox_id else None
        what = (f"pod annotation of sandbox {sandbox_id[:12]}" if sandbox_id
                else f"handler {handler}" if handler else "configuration")
        return [self.open(
            model, k, ts_ns=ts_ns, trigger_ns=ts_ns, severity=ev.Severity.ERROR,
            summary=f"Kata would reject {what}: {message} ({where})",
            sandbox_id=sandbox_id, pod=sb.pod if sb else None,
            pod_namespace=sb.pod_namespace if sb else None,
            evidence=(ev.Evidence(ts_ns=ts_ns, source=event.source, kind=event.kind,
                                  text=f"{where}: {message}"),),
            explanation=(
                f"{where}: {message}. Kata validates these settings when it loads the file (or "
                "the pod's annotations) and refuses to create sandboxes with them."
            ),
            remedy=(f"Fix {key or 'the setting'} in {path}" + (f" line {line}" if line else "")
                    + " (remember config.d/ drop-ins override the main file), or remove the pod "
                      "annotation; allowed cold_plug_vfio/hot_plug_vfio values: no-port, "
                      "bridge-port, root-port, switch-port (CLH: no-port, root-port), only one "
                      "of the two set, at most 16 root or switch ports."),
            labels=(("path", path), ("key", key or ""), ("line", str(line or "")),
                    ("handler", handler or "")),
        )]
