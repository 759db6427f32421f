"""Provides one renderer per event kind: how each event reads in every view, in one place.

Every view of an event asks its kind's renderer (`RENDERERS`, filled by `@renders`):

- `evidence(e)`: a finding's evidence line (`diag.core.episodes`), deterministic, raw;
  `[synthetic]` / `[resync]` marks are added here for every kind.
- `timeline(e)`: a line of the postmortem report's timeline, raw (escape it before printing).
- `stream(e)`: the dashboard's event stream, outside strings already made safe (`safe`).
- `fields(e)`: the flat structured-log fields (`diag.sinks.logs`); None for events never
  logged (clock ticks).

Findings also have a short title per rule (`RULE_TITLES`, `finding_title`: what happened, in a
few words, present tense while ongoing and past tense once resolved) and a story
(`finding_story`: what happened, who, which pod, what QEMU does, what to do), read by the
dashboard and available to logs and postmortem, so every view says it in the same words.

A renderer subclasses `Renderer[Kind]` and overrides the views whose words are its own; the
base's methods are the generic forms (the kind's name, or its journal fields). A new event kind
is one class here with one `@renders(...)` line; tests/unit/core/test_render.py fails for a kind in
`ev.EVENT_TYPES` without one, so no kind falls through silently. The views keep the words each
has always used (the golden files and snapshots hold them); where they differ for one kind,
they differ side by side in its class.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from diag import codec
from diag import events as ev
from diag.common.text import safe

E = TypeVar("E", bound=ev.Event)
R = TypeVar("R", bound="Renderer[Any]")


class Renderer(Generic[E]):
    """How one event kind reads; every method not overridden is the generic form."""

    def evidence(self, e: E) -> str:
        """The body of an evidence line (marks are added by `evidence()`)."""
        return e.kind.replace("_", " ")

    def timeline(self, e: E) -> str:
        """The kind and its journal fields (`netns_added netns={...}`)."""
        rec = codec.to_record(e)
        for key in ("kind", "ts_ns", "source"):
            rec.pop(key, None)
        return e.kind + " " + " ".join(f"{k}={v}" for k, v in rec.items())

    def stream(self, e: E) -> str:
        return safe(e.kind)

    def fields(self, e: E) -> dict[str, Any] | None:
        return {}


RENDERERS: dict[type[ev.Event], Renderer[Any]] = {}
"""Event class -> its renderer, one per kind of `ev.EVENT_TYPES`."""
_GENERIC: Renderer[Any] = Renderer()


def renders(*kinds: type[ev.Event]) -> Callable[[type[R]], type[R]]:
    """Register the decorated renderer for the given event classes (each only once)."""

    def deco(cls: type[R]) -> type[R]:
        for kind in kinds:
            if kind in RENDERERS:
                raise ValueError(f"event kind {kind.kind!r} has two renderers")
            RENDERERS[kind] = cls()
        return cls

    return deco


def renderer(e: ev.Event) -> Renderer[Any]:
    """The renderer of `e`'s kind (the generic one only for a kind the tests would flag)."""
    return RENDERERS.get(type(e), _GENERIC)


def evidence(e: ev.Event) -> str:
    """One line saying what an event reports, for a finding's evidence (deterministic)."""
    # Every event that joins an episode a finding follows is worded here: its kind's bound
    # method straight from a table (one call, not a lookup of the renderer and then its method).
    cls = type(e)
    word = _EVIDENCE.get(cls)
    if word is None:
        word = _EVIDENCE[cls] = renderer(e).evidence
    text = word(e)
    if e.synthetic:
        text += " [synthetic]"
    if e.resync:
        text += " [resync]"
    return text


_EVIDENCE: dict[type[ev.Event], Callable[[Any], str]] = {}
"""Event class -> its renderer's bound `evidence`, filled as kinds are first worded."""


def timeline(e: ev.Event) -> str:
    """One line saying what an event means, for the postmortem timeline (raw: escape it)."""
    return renderer(e).timeline(e)


def stream(e: ev.Event) -> str:
    """One line saying what happened, for the dashboard; outside strings already made safe."""
    return renderer(e).stream(e)


def fields(e: ev.Event) -> dict[str, Any] | None:
    """Flat log fields of an event or finding; None for events never logged."""
    return renderer(e).fields(e)


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------


def actor_label(p: ev.Process | None) -> str:
    """`comm[pid]`, with the sandbox or pod when known; `unknown process` for None."""
    if p is None:
        return "unknown process"
    name = p.comm or (p.exe.rsplit("/", 1)[-1] if p.exe else "?")
    text = f"{name}[{p.pid}]"
    if p.sandbox_id:
        text += f" (sandbox {p.sandbox_id[:12]})"
    elif p.pod:
        text += f" (pod {p.pod_namespace or '?'}/{p.pod})"
    return text


def _netns_label(n: ev.NetnsRef) -> str:
    text = n.label
    if n.pod:
        text += f" (pod {n.pod_namespace or '?'}/{n.pod})"
    return text


def _compact(f: dict[str, Any]) -> dict[str, Any]:
    """Raw-event log fields without the unknown ones (None or empty)."""
    return {k: v for k, v in f.items() if v is not None and v != ""}


def _pod_fields(sandbox_id: str | None, pod: str | None, namespace: str | None) -> dict[str, Any]:
    """The sandbox/pod log keys, only those known."""
    out: dict[str, Any] = {}
    if sandbox_id:
        out["sandbox_id"] = sandbox_id
    if pod:
        out["pod"] = pod
    if namespace:
        out["namespace"] = namespace
    return out


def actor_fields(p: ev.Process | None) -> dict[str, Any]:
    """`actor_pid`, `actor_comm`, `actor_exe` and the actor's sandbox/pod log keys."""
    if p is None:
        return {}
    out: dict[str, Any] = {"actor_pid": p.pid, "actor_comm": p.comm}
    if p.exe:
        out["actor_exe"] = p.exe
    return out | _pod_fields(p.sandbox_id, p.pod, p.pod_namespace)


def _netns_fields(ref: ev.NetnsRef) -> dict[str, Any]:
    return {"netns": ref.label} | _pod_fields(ref.sandbox_id, ref.pod, ref.pod_namespace)


def _ifindex(i: int | None) -> str:
    return f" (ifindex {i})" if i is not None else ""


# --------------------------------------------------------------------------------------------
# PCI devices
# --------------------------------------------------------------------------------------------


@renders(ev.InventoryObserved)
class _Inventory(Renderer[ev.InventoryObserved]):
    def timeline(self, e: ev.InventoryObserved) -> str:
        n_vfio = sum(1 for d in e.devices if d.driver == "vfio-pci")
        return f"inventory: {len(e.devices)} PCI devices, {n_vfio} on vfio-pci"

    def stream(self, e: ev.InventoryObserved) -> str:
        return f"inventory: {len(e.devices)} PCI devices"

    def fields(self, e: ev.InventoryObserved) -> dict[str, Any]:
        return _compact({"devices": len(e.devices),
                         "vfs": sum(1 for d in e.devices if d.role == "vf"),
                         "vfio_pci": sum(1 for d in e.devices if d.driver == "vfio-pci")})


@renders(ev.DeviceAdded)
class _Added(Renderer[ev.DeviceAdded]):
    def evidence(self, e: ev.DeviceAdded) -> str:
        return f"{e.bdf} appeared" + (f" (VF {e.vf_index} of {e.pf})" if e.pf else "")

    def timeline(self, e: ev.DeviceAdded) -> str:
        ids = f" [{e.vendor}:{e.device}]" if e.vendor else ""
        return f"{e.bdf} added{ids}" + (f" (VF {e.vf_index} of {e.pf})" if e.pf else "")

    def stream(self, e: ev.DeviceAdded) -> str:
        return f"{e.bdf} added {e.vendor}:{e.device}" + (f" VF {e.vf_index} of {e.pf}" if e.pf else "")

    def fields(self, e: ev.DeviceAdded) -> dict[str, Any]:
        return _compact({"bdf": e.bdf, "pf": e.pf, "vf_index": e.vf_index, "vendor": e.vendor,
                         "device": e.device})


@renders(ev.DeviceRemoved)
class _Removed(Renderer[ev.DeviceRemoved]):
    def evidence(self, e: ev.DeviceRemoved) -> str:
        return f"{e.bdf} removed"

    def timeline(self, e: ev.DeviceRemoved) -> str:
        return f"{e.bdf} removed"

    def stream(self, e: ev.DeviceRemoved) -> str:
        return f"{e.bdf} removed"

    def fields(self, e: ev.DeviceRemoved) -> dict[str, Any]:
        return _compact({"bdf": e.bdf})


@renders(ev.DeviceBound)
class _Bound(Renderer[ev.DeviceBound]):
    def evidence(self, e: ev.DeviceBound) -> str:
        frm = f" (was {e.previous_driver})" if e.previous_driver else ""
        return f"{e.bdf} bound to {e.driver}{frm}"

    def timeline(self, e: ev.DeviceBound) -> str:
        prev = f" (from {e.previous_driver})" if e.previous_driver else ""
        return f"{e.bdf} bound to {e.driver or '(driver not recorded)'}{prev}"

    def stream(self, e: ev.DeviceBound) -> str:
        was = f" (was {safe(e.previous_driver)})" if e.previous_driver else ""
        return f"{e.bdf} bound to {safe(e.driver)}{was}"

    def fields(self, e: ev.DeviceBound) -> dict[str, Any]:
        return _compact({"bdf": e.bdf, "driver": e.driver, "previous_driver": e.previous_driver})


@renders(ev.DeviceUnbound)
class _Unbound(Renderer[ev.DeviceUnbound]):
    def evidence(self, e: ev.DeviceUnbound) -> str:
        return f"{e.bdf} unbound" + (f" from {e.previous_driver}" if e.previous_driver else "")

    def timeline(self, e: ev.DeviceUnbound) -> str:
        return self.evidence(e)

    def stream(self, e: ev.DeviceUnbound) -> str:
        return f"{e.bdf} unbound from {safe(e.previous_driver or '?')}"

    def fields(self, e: ev.DeviceUnbound) -> dict[str, Any]:
        return _compact({"bdf": e.bdf, "previous_driver": e.previous_driver})


@renders(ev.DeviceChanged)
class _Changed(Renderer[ev.DeviceChanged]):
    def evidence(self, e: ev.DeviceChanged) -> str:
        if e.attribute:
            return f"{e.bdf} {e.attribute} = {e.value!r}"
        return f"{e.bdf} changed (driver {e.driver or 'none'})"

    def timeline(self, e: ev.DeviceChanged) -> str:
        what = f" {e.attribute}={e.value}" if e.attribute else ""
        return f"{e.bdf} changed{what}" + (f" (driver {e.driver})" if e.driver else "")

    def stream(self, e: ev.DeviceChanged) -> str:
        what = f" {safe(e.attribute)}={safe(e.value)}" if e.attribute else ""
        return f"{e.bdf} changed{what}"

    def fields(self, e: ev.DeviceChanged) -> dict[str, Any]:
        return _compact({"bdf": e.bdf, "driver": e.driver, "attribute": e.attribute,
                         "value": e.value})


@renders(ev.NetdevAdded, ev.NetdevRemoved)
class _Netdev(Renderer[ev.NetdevAdded | ev.NetdevRemoved]):
    def evidence(self, e: ev.NetdevAdded | ev.NetdevRemoved) -> str:
        verb = "added" if type(e) is ev.NetdevAdded else "removed"
        return f"netdev {e.ifname}{_ifindex(e.ifindex)} of {e.bdf} {verb}"

    def timeline(self, e: ev.NetdevAdded | ev.NetdevRemoved) -> str:
        verb = "appeared under" if type(e) is ev.NetdevAdded else "removed from"
        return f"netdev {e.ifname}{_ifindex(e.ifindex)} {verb} {e.bdf or 'a non-PCI device'}"

    def stream(self, e: ev.NetdevAdded | ev.NetdevRemoved) -> str:
        if type(e) is ev.NetdevAdded:
            return f"netdev {safe(e.ifname)} added" + (f" on {e.bdf}" if e.bdf else "")
        return f"netdev {safe(e.ifname)} removed" + (f" from {e.bdf}" if e.bdf else "")

    def fields(self, e: ev.NetdevAdded | ev.NetdevRemoved) -> dict[str, Any]:
        return _compact({"bdf": e.bdf, "netdev": e.ifname, "ifindex": e.ifindex})


@renders(ev.VfioDeviceAdded, ev.VfioDeviceRemoved)
class _VfioNode(Renderer[ev.VfioDeviceAdded | ev.VfioDeviceRemoved]):
    def evidence(self, e: ev.VfioDeviceAdded | ev.VfioDeviceRemoved) -> str:
        verb = "added" if type(e) is ev.VfioDeviceAdded else "removed"
        group = f" (group {e.group})" if e.group is not None else ""
        return f"vfio node {e.devname or '?'} {verb}{group}"

    def timeline(self, e: ev.VfioDeviceAdded | ev.VfioDeviceRemoved) -> str:
        verb = "created" if type(e) is ev.VfioDeviceAdded else "removed"
        who = e.bdf or (f"group {e.group}" if e.group is not None else "?")
        return f"/dev/{e.devname or 'vfio'} {verb} ({who})"

    def stream(self, e: ev.VfioDeviceAdded | ev.VfioDeviceRemoved) -> str:
        verb = "added" if type(e) is ev.VfioDeviceAdded else "removed"
        return f"vfio {safe(e.devname)} {verb}" + (f" for {e.bdf}" if e.bdf else "")

    def fields(self, e: ev.VfioDeviceAdded | ev.VfioDeviceRemoved) -> dict[str, Any]:
        return _compact({"bdf": e.bdf, "iommu_group": e.group, "devname": e.devname})


@renders(ev.DriverRegistered, ev.DriverUnregistered)
class _Driver(Renderer[ev.DriverRegistered | ev.DriverUnregistered]):
    """Generic in every view: a driver coming or going is context, never a story of its own."""


# --------------------------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------------------------


@renders(ev.NetnsAdded, ev.NetnsRemoved)
class _Netns(Renderer[ev.NetnsAdded | ev.NetnsRemoved]):
    def stream(self, e: ev.NetnsAdded | ev.NetnsRemoved) -> str:
        what = "appeared" if type(e) is ev.NetnsAdded else "gone"
        return f"netns {safe(e.netns.label)} {what}"

    def fields(self, e: ev.NetnsAdded | ev.NetnsRemoved) -> dict[str, Any]:
        return _compact({**_netns_fields(e.netns), "netns_inode": e.netns.inode})


@renders(ev.LinkChanged)
class _LinkChanged(Renderer[ev.LinkChanged]):
    def evidence(self, e: ev.LinkChanged) -> str:
        state = f" {e.operstate}" if e.operstate else ""
        return f"link {e.ifname} (ifindex {e.ifindex}){state} in netns {_netns_label(e.netns)}"

    def timeline(self, e: ev.LinkChanged) -> str:
        carrier = {True: "carrier", False: "no-carrier", None: ""}[e.carrier]
        bits = [x for x in (e.operstate, carrier, "admin-up" if e.admin_up else "admin-down",
                            e.mac) if x]
        where = f" ({e.bdf})" if e.bdf else ""
        return f"link {e.ifname} #{e.ifindex} in {e.netns.label}{where}: {' '.join(bits)}"

    def stream(self, e: ev.LinkChanged) -> str:
        state = e.operstate or ("up" if e.admin_up else "down")
        where = f" ({e.bdf})" if e.bdf else ""
        return f"link {safe(e.ifname)}#{e.ifindex} {safe(state)} in {safe(e.netns.label)}{where}"

    def fields(self, e: ev.LinkChanged) -> dict[str, Any]:
        return _compact({"netdev": e.ifname, "ifindex": e.ifindex, **_netns_fields(e.netns),
                         "operstate": e.operstate, "carrier": e.carrier, "bdf": e.bdf,
                         "link_kind": e.link_kind})


@renders(ev.LinkRemoved)
class _LinkRemoved(Renderer[ev.LinkRemoved]):
    def evidence(self, e: ev.LinkRemoved) -> str:
        return f"link {e.ifname} (ifindex {e.ifindex}) removed from netns {_netns_label(e.netns)}"

    def timeline(self, e: ev.LinkRemoved) -> str:
        return f"link {e.ifname} #{e.ifindex} removed from {e.netns.label}"

    def stream(self, e: ev.LinkRemoved) -> str:
        return f"link {safe(e.ifname)}#{e.ifindex} removed from {safe(e.netns.label)}"

    def fields(self, e: ev.LinkRemoved) -> dict[str, Any]:
        return _compact({"netdev": e.ifname, "ifindex": e.ifindex, **_netns_fields(e.netns),
                         "bdf": e.bdf})


# --------------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------------

_RECOVERED_FROM = {"unbind": "from the unbind that followed", "bind": "from the bind that followed",
                   "drivers_probe": "from the bind that followed"}


@renders(ev.SysfsWriteObserved)
class _Write(Renderer[ev.SysfsWriteObserved]):
    """`stage` `open` (tracepoint mode, open-only variant): only the open was seen, so it reads
    "opened ... for writing", with a value only when it was recovered. Mode `kata-log`: Kata's
    line, logged before the write, says it was made but not how it ended, so no result is
    claimed (the eBPF witness of the same write has it)."""

    def evidence(self, e: ev.SysfsWriteObserved) -> str:
        if e.mode == "kata-log":  # Kata logs the write before it makes it: no result to say
            return f"{actor_label(e.actor)} wrote {e.value!r} to {e.path} (Kata's log line)"
        res = "ok" if e.result >= 0 else f"failed ({e.result})"
        if e.stage == "open":
            text = f"{actor_label(e.actor)} opened {e.path} for writing: {res}"
            if e.value_recovered:
                how = _RECOVERED_FROM.get(e.control, "read back")
                text += f"; value {e.value!r} recovered ({how})"
            return text
        return f"{actor_label(e.actor)} wrote {e.value!r} to {e.path}: {res}"

    def timeline(self, e: ev.SysfsWriteObserved) -> str:
        who = f"{e.actor.comm}[{e.actor.pid}]"
        if e.mode == "kata-log":
            return f"{who} wrote {e.value!r} to {e.path} (Kata's log line)"
        res = "ok" if e.result >= 0 else f"error {-e.result}"
        if e.stage == "open":
            got = f", {e.value!r} read back" if e.value_recovered else ""
            return f"{who} opened {e.path} for writing ({res}{got})"
        return f"{who} wrote {e.value!r} to {e.path} ({res})"

    def stream(self, e: ev.SysfsWriteObserved) -> str:
        who = f"{safe(e.actor.comm, 16)}[{e.actor.pid}]"
        of = f" of {e.bdf}" if e.bdf else ""
        res = "" if e.result >= 0 else f" → error {e.result}"
        if e.stage == "open":
            got = f" ('{safe(e.value, 24)}' read back)" if e.value_recovered else ""
            return f"{who} opened {safe(e.control)}{of} for writing{got}{res}"
        return f"{who} wrote {safe(e.value, 24)!r} to {safe(e.control)}{of}{res}"

    def fields(self, e: ev.SysfsWriteObserved) -> dict[str, Any]:
        # stage=open: result is the fd or the open's -errno, not bytes written; value_recovered
        # marks a value read back or taken from the uevent that followed.
        return _compact({"bdf": e.bdf, "driver": e.driver, "control": e.control,
                         "value": e.value, "path": e.path, "result": e.result,
                         "stage": e.stage, "value_recovered": e.value_recovered or None,
                         "ebpf_mode": e.mode, **actor_fields(e.actor)})


# --------------------------------------------------------------------------------------------
# Kata context
# --------------------------------------------------------------------------------------------


@renders(ev.KataConfigLoaded)
class _ConfigLoaded(Renderer[ev.KataConfigLoaded]):
    def timeline(self, e: ev.KataConfigLoaded) -> str:
        c = e.config
        return (f"Kata config {c.handler}: cold_plug_vfio={c.cold_plug_vfio} "
                f"hot_plug_vfio={c.hot_plug_vfio} pcie_root_port={c.pcie_root_port}"
                + (f" ({c.path})" if c.path else "") + (" [assumed]" if c.assumed else ""))

    def stream(self, e: ev.KataConfigLoaded) -> str:
        c = e.config
        assumed = " (assumed default)" if c.assumed else ""
        return f"kata {safe(c.handler)} config: cold_plug_vfio={safe(c.cold_plug_vfio)}{assumed}"

    def fields(self, e: ev.KataConfigLoaded) -> dict[str, Any]:
        c = e.config
        return _compact({"handler": c.handler, "cold_plug_vfio": c.cold_plug_vfio,
                         "hot_plug_vfio": c.hot_plug_vfio, "path": c.path,
                         "assumed": c.assumed})


@renders(ev.KataConfigInvalid)
class _ConfigInvalid(Renderer[ev.KataConfigInvalid]):
    def timeline(self, e: ev.KataConfigInvalid) -> str:
        return f"Kata config invalid: {e.path}: {e.message}"

    def stream(self, e: ev.KataConfigInvalid) -> str:
        return f"kata config invalid: {safe(e.path)}: {safe(e.message, 80)}"

    def fields(self, e: ev.KataConfigInvalid) -> dict[str, Any]:
        return _compact({"path": e.path, "message": e.message, "handler": e.handler,
                         "line": e.line, "key": e.key, "sandbox_id": e.sandbox_id})


def _facts_version(f: ev.KataHandlerFacts) -> str:
    rt = "runtime-rs" if f.runtime == "rs" else "Go"
    if not f.version:
        return f"Kata version unknown ({rt})"
    src = f.version_source.source if f.version_source else "?"
    return f"Kata {f.version} ({rt}, from {src})"


@renders(ev.KataFactsObserved)
class _FactsObserved(Renderer[ev.KataFactsObserved]):
    def evidence(self, e: ev.KataFactsObserved) -> str:
        f = e.facts
        if e.gone:
            return f"kata handler {f.handler} no longer configured"
        if f.assumed:
            return "no Kata installed"
        vfs = f"{len(f.vfs)} VF(s) pods can be given" if f.vfs_known else "VFs not known"
        return f"kata handler {f.handler}: {_facts_version(f)}, cold_plug_vfio={f.cold_plug_vfio}, {vfs}"

    def timeline(self, e: ev.KataFactsObserved) -> str:
        f = e.facts
        if e.gone or f.assumed:
            return self.evidence(e)
        src = f" read from {f.version_source.detail}" if f.version_source else ""
        return (f"Kata handler {f.handler}: {_facts_version(f)}{src}; cold_plug_vfio={f.cold_plug_vfio} "
                f"({f.cold_plug_origin}) pcie_root_port={f.pcie_root_port}; "
                + (f"{len(f.vfs)} VF(s) pods can be given" if f.vfs_known else "VFs not known"))

    def stream(self, e: ev.KataFactsObserved) -> str:
        return safe(self.evidence(e), 120)

    def fields(self, e: ev.KataFactsObserved) -> dict[str, Any]:
        f = e.facts
        return _compact({"handler": f.handler, "runtime": f.runtime, "version": f.version or None,
                         "version_source": f.version_source.source if f.version_source else None,
                         "cold_plug_vfio": f.cold_plug_vfio, "pcie_root_port": f.pcie_root_port,
                         "vfs": len(f.vfs) if f.vfs_known else None, "assumed": f.assumed or None,
                         "gone": e.gone or None})


@renders(ev.SandboxStarted)
class _SandboxStarted(Renderer[ev.SandboxStarted]):
    def evidence(self, e: ev.SandboxStarted) -> str:
        pod = f" pod {e.pod_namespace or '?'}/{e.pod}" if e.pod else ""
        return (f"sandbox {e.sandbox_id[:12]} ({e.runtime}){pod} "
                f"cold_plug_vfio={e.cold_plug_vfio}")

    def timeline(self, e: ev.SandboxStarted) -> str:
        vfs = ", ".join(v.bdf for v in e.vfs) or "no VFs"
        return (f"sandbox {e.sandbox_id[:12]} ({e.runtime}) cold_plug_vfio={e.cold_plug_vfio}: "
                f"{vfs}")

    def stream(self, e: ev.SandboxStarted) -> str:
        pod = f" pod {safe(e.pod_namespace or '')}/{safe(e.pod)}" if e.pod else ""
        return (f"sandbox {safe(e.sandbox_id, 16)} started{pod} "
                f"cold_plug_vfio={safe(e.cold_plug_vfio)}")

    def fields(self, e: ev.SandboxStarted) -> dict[str, Any]:
        return _compact({"sandbox_id": e.sandbox_id, "pod": e.pod, "namespace": e.pod_namespace,
                         "netns": e.netns.label if e.netns else None,
                         "cold_plug_vfio": e.cold_plug_vfio,
                         "vfs": ",".join(v.bdf for v in e.vfs) or None})


@renders(ev.SandboxStopped)
class _SandboxStopped(Renderer[ev.SandboxStopped]):
    def evidence(self, e: ev.SandboxStopped) -> str:
        return f"sandbox {e.sandbox_id[:12]} stopped"

    def timeline(self, e: ev.SandboxStopped) -> str:
        return self.evidence(e)

    def stream(self, e: ev.SandboxStopped) -> str:
        return f"sandbox {safe(e.sandbox_id, 16)} stopped"

    def fields(self, e: ev.SandboxStopped) -> dict[str, Any]:
        return _compact({"sandbox_id": e.sandbox_id})


@renders(ev.VfioGroupHeld)
class _Held(Renderer[ev.VfioGroupHeld]):
    def evidence(self, e: ev.VfioGroupHeld) -> str:
        return f"/dev/vfio/{e.group} held by {actor_label(e.holder)}"

    def stream(self, e: ev.VfioGroupHeld) -> str:
        return f"/dev/vfio/{e.group} held by {safe(e.holder.comm)}[{e.holder.pid}]"

    def fields(self, e: ev.VfioGroupHeld) -> dict[str, Any]:
        return _compact({"iommu_group": e.group, **actor_fields(e.holder)})


@renders(ev.VfioGroupReleased)
class _Released(Renderer[ev.VfioGroupReleased]):
    def evidence(self, e: ev.VfioGroupReleased) -> str:
        who = f" by pid {e.pid}" if e.pid is not None else ""
        return f"/dev/vfio/{e.group} released{who}"

    def stream(self, e: ev.VfioGroupReleased) -> str:
        return f"/dev/vfio/{e.group} released"

    def fields(self, e: ev.VfioGroupReleased) -> dict[str, Any]:
        return _compact({"iommu_group": e.group, "actor_pid": e.pid})


@renders(ev.LogLineMatched)
class _Log(Renderer[ev.LogLineMatched]):
    def evidence(self, e: ev.LogLineMatched) -> str:
        where = f" ({e.origin})" if e.origin else ""
        return f"[{e.signature}]{where} {e.text}"

    def timeline(self, e: ev.LogLineMatched) -> str:
        sb = f" sandbox={e.sandbox_id[:12]}" if e.sandbox_id else ""
        return f"[{e.signature}]{sb} {e.text}"

    def stream(self, e: ev.LogLineMatched) -> str:
        return f"{safe(e.signature)}: {safe(e.text, 100)}"

    def fields(self, e: ev.LogLineMatched) -> dict[str, Any]:
        return _compact({"signature": e.signature, "message": e.text, "origin": e.origin,
                         "sandbox_id": e.sandbox_id, "bdf": e.bdf})


# --------------------------------------------------------------------------------------------
# Health, loss and resync: always logged, with their own fields (unknown values kept)
# --------------------------------------------------------------------------------------------


@renders(ev.SourceStateChanged)
class _SourceState(Renderer[ev.SourceStateChanged]):
    def timeline(self, e: ev.SourceStateChanged) -> str:
        return f"source {e.name} {'up' if e.up else 'down'}" + (f": {e.reason}" if e.reason else "")

    def stream(self, e: ev.SourceStateChanged) -> str:
        mode = f" ({safe(e.mode)})" if e.mode else ""
        reason = f": {safe(e.reason, 80)}" if e.reason else ""
        return f"source {safe(e.name)} {'up' if e.up else 'down'}{mode}{reason}"

    def fields(self, e: ev.SourceStateChanged) -> dict[str, Any]:
        f: dict[str, Any] = {"source": e.name, "up": e.up}
        for key, value in (("mode", e.mode), ("reason", e.reason), ("hint", e.hint)):
            if value:
                f[key] = value
        return f


@renders(ev.EventsLost)
class _Lost(Renderer[ev.EventsLost]):
    def timeline(self, e: ev.EventsLost) -> str:
        n = "some" if e.count is None else str(e.count)
        return f"{e.lost_source} lost {n} events" + (f": {e.reason}" if e.reason else "")

    def stream(self, e: ev.EventsLost) -> str:
        n = "some" if e.count is None else str(e.count)
        return f"{safe(e.lost_source)} lost {n} events" + (f": {safe(e.reason)}" if e.reason else "")

    def fields(self, e: ev.EventsLost) -> dict[str, Any]:
        return {"source": e.lost_source, "count": e.count, "reason": e.reason}


@renders(ev.Resynced)
class _Resynced(Renderer[ev.Resynced]):
    def timeline(self, e: ev.Resynced) -> str:
        return f"{e.resynced_source} resynced ({e.changes} changes)"

    def stream(self, e: ev.Resynced) -> str:
        return f"{safe(e.resynced_source)} resynced, {e.changes} changes"

    def fields(self, e: ev.Resynced) -> dict[str, Any]:
        return {"source": e.resynced_source, "changes": e.changes, "reason": e.reason}


@renders(ev.DecodeFailed)
class _DecodeFailed(Renderer[ev.DecodeFailed]):
    def stream(self, e: ev.DecodeFailed) -> str:
        return f"{safe(e.failed_source)} could not decode: {safe(e.reason, 80)}"

    def fields(self, e: ev.DecodeFailed) -> dict[str, Any]:
        f: dict[str, Any] = {"source": e.failed_source, "reason": e.reason, "count": e.count}
        if e.sample_hex:
            f["sample_hex"] = e.sample_hex[:128]
        return f


@renders(ev.ClockTicked)
class _Tick(Renderer[ev.ClockTicked]):
    """Generic words; never logged (a tick is the replay's clock, not news)."""

    def fields(self, e: ev.ClockTicked) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------


@renders(ev.Finding)
class _Finding(Renderer[ev.Finding]):
    def timeline(self, e: ev.Finding) -> str:
        return f"FINDING {e.status} {e.severity.label} {e.rule}: {e.summary}"

    def stream(self, e: ev.Finding) -> str:
        return f"{e.severity.label} {safe(e.rule)}: {safe(e.summary, 100)}"

    def fields(self, e: ev.Finding) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": e.rule, "severity": e.severity.label, "finding_id": e.finding_id,
            "status": e.status, "summary": e.summary,
        }
        for key, value in (("bdf", e.bdf), ("pf", e.pf), ("vf_index", e.vf_index),
                           ("netdev", e.netdev), ("netns", e.netns), ("sandbox_id", e.sandbox_id),
                           ("pod", e.pod), ("namespace", e.pod_namespace)):
            if value is not None:
                out[key] = value
        out.update({k: v for k, v in actor_fields(e.actor).items() if k not in out})
        if e.status == "resolved" and e.resolved_reason:
            out["resolved_reason"] = e.resolved_reason
        if e.remedy and e.status != "resolved":
            out["remedy"] = e.remedy
        out["synthetic"] = e.synthetic
        return out


# --------------------------------------------------------------------------------------------
# Finding titles and stories
# --------------------------------------------------------------------------------------------

RULE_TITLES: dict[str, tuple[str, str]] = {
    "vfio-bind-coldplug-disabled": ("moved to vfio-pci while cold plug is disabled",
                                    "was moved to vfio-pci while cold plug was disabled"),
    "vfio-bind-unexpected-actor": ("bound to vfio-pci by an unexpected process",
                                   "was bound to vfio-pci by an unexpected process"),
    "driver-flapping": ("moving back and forth between drivers",
                        "moved back and forth between drivers"),
    "iommu-group-not-viable": ("on vfio-pci in an IOMMU group that is not viable",
                               "was on vfio-pci in an IOMMU group that was not viable"),
    "kata-config-invalid": ("a Kata configuration Kata would reject",
                            "a Kata configuration Kata would have rejected"),
    "kata-known-error": ("Kata reported a known failure", "Kata reported a known failure"),
    "event-loss": ("a source lost events", "a source lost events (resynced)"),
    "vf-netdev-lost": ("a VF lost its netdev", "a VF lost its netdev"),
    "vf-stranded-on-vfio": ("left on vfio-pci with nothing using it",
                            "was left on vfio-pci with nothing using it"),
    "vf-stuck-unbound": ("left with no driver after a restore",
                         "was left with no driver after a restore"),
    "kata-vfio-exposure": ("this host's Kata is exposed to a known VFIO bug",
                           "this host's Kata was exposed to a known VFIO bug"),
}
"""Rule id -> (title while ongoing, title once resolved): what happened, in a few words.
tests/unit/core/test_render.py fails for a registered rule without one."""

SIGNATURE_TITLES: dict[str, str] = {
    "qemu-bus-not-found": "QEMU refused the VF: its PCIe bus does not exist",
    "qmp-bus-not-found": "QEMU could not hot-plug: its PCIe bus does not exist",
    "port-not-set": "Kata found no cold/hot-plug port for the VF",
    "coldplug-disabled-refusal": "Kata refused the pod: cold plug is disabled",
    "vfio-group-not-viable": "QEMU: the VF's IOMMU group is not viable",
    "cannot-start-vm": "Kata could not start the VM",
    "qmp-connect-failed": "Kata could not reach QEMU",
    "qemu-exited-error": "QEMU exited with an error",
    "error-removing-endpoint": "Kata could not give the VF back",
    "create-rollback": "Kata rolled back a failed sandbox",
}
"""`kata-known-error` findings are titled by the signature of their line."""


def _label(f: ev.Finding, key: str) -> str:
    for k, v in f.labels:
        if k == key:
            return v
    return ""


def rule_title(rule: str, resolved: bool = False) -> str:
    """The short title of a rule (its id in words when it has none)."""
    pair = RULE_TITLES.get(rule)
    if pair is None:
        return rule.replace("-", " ")
    return pair[1] if resolved else pair[0]


def finding_title(f: ev.Finding) -> str:
    """What happened, in a few words: the rule's title (a known error's own), past tense once
    the finding is resolved."""
    if f.rule == "kata-known-error":
        sig = _label(f, "signature")
        if sig in SIGNATURE_TITLES:
            return SIGNATURE_TITLES[sig]
        if sig:
            return f"Kata reported {sig}"
    if f.rule == "kata-vfio-exposure":
        issue = _label(f, "issue")
        if issue.isdigit():
            return (f"Kata is exposed to #{issue}" if f.active
                    else f"Kata was exposed to #{issue}")
    return rule_title(f.rule, resolved=not f.active)


def pod_label(pod: str | None, namespace: str | None) -> str:
    """`default/sriov-pod`, `sriov-pod` without a namespace, "" without a pod."""
    if not pod:
        return ""
    return f"{namespace}/{pod}" if namespace else pod


def finding_story(f: ev.Finding) -> list[tuple[str, str]]:
    """The finding as an operator reads it, as (heading, text) rows: what happened, who, which
    pod, the network lost, the cold-plug setting, what QEMU does (or did), then what to do
    (only while ongoing) or how it ended. Raw text: escape it before printing."""
    done = not f.active
    rows: list[tuple[str, str]] = []
    labels = dict(f.labels)
    where = f.bdf or ""
    if f.pf:
        where += f" (VF {'?' if f.vf_index is None else f.vf_index} of {f.pf})"
    frm = labels.get("from_driver")
    what = (f"{where}: " if where else "") + (
        f"left {frm} for vfio-pci" if frm and f.rule.startswith("vfio-bind") else finding_title(f))
    rows.append(("what happened", f"{what} at {_clock(f.first_ns)}"))
    if f.actor is not None:
        a = f.actor
        who = f"{a.comm or '?'}[{a.pid}]"
        if a.exe:
            who += f" {a.exe}"
        rows.append(("who", who))
    pod = pod_label(f.pod, f.pod_namespace)
    if pod or f.sandbox_id:
        rows.append(("pod", (pod or "unknown pod") + (f" (sandbox {f.sandbox_id[:12]})" if f.sandbox_id else "")))
    if f.netdev:
        rows.append(("network", f"{f.netdev} vanished from netns {f.netns or 'host'}"
                     + (f" when it left {frm}" if frm else "")))
    if "cold_plug_vfio" in labels:
        origin = labels.get("cold_plug_origin", "")
        rows.append(("cold plug", f"cold_plug_vfio={labels['cold_plug_vfio']}"
                     + (f" from {origin}" if origin else "")))
    if "predicted_error" in labels:
        bus = labels["predicted_error"]
        if labels.get("confirmed_by"):
            rows.append(("QEMU", f"failed as predicted: {bus} (Kata #10162)"))
        elif done:
            rows.append(("QEMU", f"would have failed: {bus} (Kata #10162)"))
        else:
            rows.append(("QEMU", f"will fail: {bus} (Kata #10162); the pod will not start"))
    if "method" in labels:
        rows.append(("writes", labels["method"]))
    if done:
        why = f": {f.resolved_reason}" if f.resolved_reason else ""
        rows.append(("ended", f"{_clock(f.resolved_ns)}{why}"))
    elif f.remedy:
        rows.append(("what to do", f.remedy))
    return rows


def _clock(ts_ns: int | None) -> str:
    if not ts_ns:
        return "-"
    secs, frac = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%H:%M:%S") + f".{frac // 1_000_000:03d}"


ALWAYS_LOGGED: frozenset[type[ev.Event]] = frozenset(
    {ev.Finding, ev.SourceStateChanged, ev.EventsLost, ev.Resynced, ev.DecodeFailed})
"""The kinds the agent's log sink writes without `--log-events`: findings and its own health.
A log line of any other kind says the agent ran with it (postmortem tells the two apart)."""
