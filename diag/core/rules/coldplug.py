"""Provides rule `vfio-bind-coldplug-disabled`: a VF moved to vfio-pci while cold plug is off.

Kata issue #10162: with `cold_plug_vfio = "no-port"` (Kata's default) the Go runtime 3.3-3.8
still moves a pod's VF from its network driver to vfio-pci, then cold-plugs it with an empty
PCIe port prefix, so QEMU exits with `Bus '<unknown PCIePortBusPrefix: >0' not found` and the
pod is left without its VF network. Go >= 3.9 refuses such pods before touching the VF;
runtime-rs has no such check.
"""

from __future__ import annotations

from diag import events as ev
from diag.core.episodes import VFIO_DRIVER, Episode
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import (
    ColdPlug,
    ConditionRule,
    device_label,
    effective_cold_plug,
    is_kata_shim,
)
from diag.render import actor_label

BUS_ERROR = "Bus '<unknown PCIePortBusPrefix: >0' not found"
UNNAMED = "its host driver (not named in these inputs)"
OTHER_FAILURES = frozenset({"port-not-set", "coldplug-disabled-refusal"})
"""Failures that are not #10162 although the VF moved with cold plug off: Kata 3.2's missing
port (#9014) fails before QEMU; >= 3.9 refuses before any write."""


_SEQUENCES = (
    (("unbind", "new_id", "bind"),
     "Kata Go 3.0-3.7 sequence (driver/unbind, vfio-pci/new_id, vfio-pci/bind)", "Kata Go 3.0-3.7"),
    (("driver_override", "unbind", "drivers_probe"),
     "driver_override, driver/unbind, drivers_probe (Kata Go >= 3.8, runtime-rs, driverctl)",
     "Kata Go >= 3.8, runtime-rs and driverctl"),
)
"""Known write sequences: the controls each writes, how the method reads when every one of them
is in the evidence, and who writes it."""


def method_of(ep: Episode | None) -> str:
    """Which write sequence moved the device, from the writes in the evidence alone: a known
    sequence is named only when all its writes were attributed; otherwise the writes seen, and
    which of the closest known sequence's writes were not."""
    if ep is None or not ep.controls:
        return "unknown (no write attributed)"
    controls = tuple(ep.controls)
    said = _METHODS.get(controls)
    if said is None:
        if len(_METHODS) >= _METHODS_KEPT:
            _METHODS.clear()
        said = _METHODS[controls] = _method_of(controls)
    return said


_METHODS: dict[tuple[str, ...], str] = {}
"""Controls written -> `method_of` (a handful of sequences recur: worded once each)."""
_METHODS_KEPT = 256


def _method_of(controls: tuple[str, ...]) -> str:
    seen = list(dict.fromkeys(controls))
    best: tuple[int, tuple[str, ...], str] | None = None
    for known, name, who in _SEQUENCES:
        if all(c in seen for c in known):
            return name
        common = sum(c in seen for c in known)
        if common >= 2 and (best is None or common > best[0]):
            best = (common, known, who)
    text = ", ".join(seen)
    if best is not None:
        missing = ", ".join(c for c in best[1] if c not in seen)
        text += f" (as {best[2]} write them; the {missing} write was not attributed)"
    return text


def declared_intent(model: Model, cfg_allow: tuple[str, ...], driverctl: tuple[str, ...],
                    bdf: str) -> str:
    """Why binding `bdf` to vfio-pci is intended, or '' when nothing says so."""
    if bdf in driverctl:
        return f"driverctl override /etc/driverctl.d/pci-{bdf}"
    rec = model.devices.get(bdf)
    pf = rec.device.pf if rec is not None else None
    if bdf in cfg_allow:
        return f"allow_vfio entry {bdf}"
    if pf is not None and pf in cfg_allow:
        return f"allow_vfio entry {pf} (its PF)"
    return ""


def _logging_shim(ep: Episode) -> ev.Process | None:
    """The Kata shim whose log line (with its `pid=` and sandbox) is in the episode."""
    for x in ep.events:
        if isinstance(x, ev.LogLineMatched) and x.sandbox_id and x.pid and x.origin != "dmesg":
            return ev.Process(pid=x.pid, comm="containerd-shim", sandbox_id=x.sandbox_id,
                              kata_runtime="go")
    return None


@register
class VfioBindColdplugDisabled(ConditionRule):
    """Open on a bind to vfio-pci from a host driver when the effective cold_plug_vfio is off."""

    id = "vfio-bind-coldplug-disabled"
    events = (ev.DeviceBound, ev.DeviceUnbound, ev.DeviceRemoved, ev.SandboxStarted)

    # One method per event kind (the correlator calls them directly; `on_event` dispatches).

    def on_device_bound(self, model: Model, event: ev.DeviceBound) -> list[ev.Finding]:
        if event.driver == VFIO_DRIVER:
            return self._bound_vfio(model, event)
        if event.bdf not in self._by_bdf:  # nothing open: no reason to word
            return []
        return self.resolve_all(self.keys_for(event.bdf), event.ts_ns,
                                f"returned to host driver {event.driver}")

    def on_device_unbound(self, model: Model, event: ev.DeviceUnbound) -> list[ev.Finding]:
        if event.bdf not in self._by_bdf:
            return []
        return self.resolve_all(self.keys_for(event.bdf), event.ts_ns, "unbound from vfio-pci")

    def on_device_removed(self, model: Model, event: ev.DeviceRemoved) -> list[ev.Finding]:
        if event.bdf not in self._by_bdf:
            return []
        return self.resolve_all(self.keys_for(event.bdf), event.ts_ns, "device removed")

    def on_sandbox_started(self, model: Model, event: ev.SandboxStarted) -> list[ev.Finding]:
        # Its VFs, and the moves its own shim made (a sandbox reported after the move, with
        # no VF listed yet): their findings now know the pod.
        mine = {v.bdf for v in event.vfs} | set(event.vmm_vfio_devices)
        keys = [k for b in sorted(mine) for k in self.keys_for(b)]
        keys += [k for k, st in self.open_.items()
                 if st.finding.sandbox_id == event.sandbox_id and k not in keys]
        out = []
        for key in keys:
            st = self.open_[key]
            f = self.refresh(model, key, st.finding, st.episode, event.ts_ns)
            if f is not None:
                out.append(f)
        return out

    def _bound_vfio(self, model: Model, e: ev.DeviceBound) -> list[ev.Finding]:
        rec = model.devices.get(e.bdf)
        if rec is None or e.bdf in self._by_bdf:
            return []
        prev = e.previous_driver or rec.last_driver
        if prev == VFIO_DRIVER:
            return []
        ep = model.episode(e.bdf)
        if prev is None:
            # A move from an unnamed driver is still a move: an unbind before this bind, the
            # netdev removed under the device, or a bind Kata made (known from its own lines).
            # Only a first bind of a new VF is not.
            moved = ep is not None and (
                (ep.unbind_ns is not None and ep.unbind_ns <= e.ts_ns) or ep.lost is not None
                or e.source == ev.KATA_LOG)
            if not moved:
                return []
            prev = rec.host_driver or UNNAMED
        fields = self._assess(model, e.bdf, ep, prev)
        if fields is None:
            return []
        severity = fields.pop("severity")
        summary = fields.pop("summary")
        assert isinstance(severity, ev.Severity) and isinstance(summary, str)
        f = self.open(model, e.bdf, ts_ns=e.ts_ns, trigger_ns=e.ts_ns, bdf=e.bdf,
                      episode=ep, severity=severity, summary=summary, **fields)
        self.open_[e.bdf].facts = self._facts(model, e.bdf, ep, prev)
        return [f]

    def _facts(self, model: Model, bdf: str, ep: Episode | None, prev: str) -> tuple[object, ...]:
        """Everything `_assess` words a finding from: equal facts give an equal finding, so a
        reassessment whose facts did not change words nothing (most of them: a move's later
        writes and uevents join the episode without changing what it says)."""
        actor = ep.actor if ep is not None else model.last_actor.get(bdf)
        rec = model.devices.get(bdf)
        dev = rec.device if rec is not None else None
        if ep is None:
            return (prev, actor, effective_cold_plug(model, bdf, actor, None),
                    dev.pf if dev else None, dev.vf_index if dev else None)
        return (prev, actor, effective_cold_plug(model, bdf, actor, ep.sandbox_id),
                dev.pf if dev else None, dev.vf_index if dev else None, ep.lost, ep.sandbox_id,
                "qemu-bus-not-found" in ep.signatures, tuple(ep.controls), ep.first_ns)

    def refresh(self, model: Model, key: str, finding: ev.Finding, episode: Episode | None,
                now_ns: int) -> ev.Finding | None:
        st = self.open_.get(key)
        # The driver it left: the first of the facts it was worded from, else its label.
        prev = (st.facts[0] if st is not None and st.facts
                else dict(finding.labels).get("from_driver", "?"))
        if st is not None:
            facts = self._facts(model, key, episode, prev)
            if facts == st.facts:
                return None
            st.facts = facts
        fields = self._assess(model, key, episode, prev)
        if fields is None:
            cp = effective_cold_plug(model, key, episode.actor if episode else None)
            return self.resolve(key, now_ns, f"cold_plug_vfio is {cp.value} ({cp.origin}): "
                                             "the bind was an expected cold plug")
        return self.update(key, now_ns, **fields)

    def _assess(self, model: Model, bdf: str, ep: Episode | None,
                prev: str) -> dict[str, object] | None:
        """The finding's fields for a move of `bdf` from `prev` to vfio-pci; None when cold plug
        is enabled (the bind is an expected cold plug)."""
        own = model.owner(bdf, ep)
        actor = own.actor
        logged_by = None
        if actor is None and ep is not None:
            # No write attributed: the shim that logged about this VF (its `pid=`) moved it.
            logged_by = _logging_shim(ep)
            actor = logged_by
        cp = effective_cold_plug(model, bdf, actor, ep.sandbox_id if ep else None)
        if not cp.disabled:
            return None
        if ep is not None and OTHER_FAILURES.intersection(ep.signatures):
            return None
        cfg = self.config
        intent = declared_intent(model, cfg.allow_vfio, cfg.driverctl_overrides, bdf)
        named_by_kata = ep.sandbox_id if ep is not None else None
        severity, why = _severity(actor, cp, intent, named_by_kata)
        lost = ep.lost if ep is not None else None
        # The owner every view uses first; Kata's own word (the sandbox its config came from,
        # the sandbox its lines named) where the evidence holds no more.
        sb = cp.sandbox
        pod = own.pod or (sb.pod if sb else None) or (lost.pod if lost else None)
        pod_ns = own.pod_namespace if own.pod else (
            (sb.pod_namespace if sb else None) or (lost.pod_namespace if lost else None))
        sandbox_id = own.sandbox_id or (sb.sandbox_id if sb else None) or (
            ep.sandbox_id if ep else None) or (actor.sandbox_id if actor else None)
        confirmed = ep is not None and "qemu-bus-not-found" in ep.signatures
        if cp.assumed and confirmed:
            cp = ev.replace(cp, assumed=False,
                         origin="QEMU's line: bus <unknown PCIePortBusPrefix: >0 is what "
                                "cold_plug_vfio = no-port gives")
        assumed = " (assumed: Kata's built-in default)" if cp.assumed else ""
        outcome = ("QEMU failed as predicted" if confirmed
                   else "QEMU will fail") + " and the VF's network is gone"
        summary = (f"{device_label(model, bdf)} moved from {prev} to vfio-pci by "
                   f"{actor_label(actor)} while cold_plug_vfio={cp.value}{assumed}: {outcome}")
        inferred = _inferred(model, bdf, prev, ep, logged_by)
        method = method_of(ep)
        labels = [("from_driver", prev), ("cold_plug_vfio", cp.value),
                  ("cold_plug_origin", cp.origin),
                  ("cold_plug_assumed", "true" if cp.assumed else "false"),
                  ("method", method), ("predicted_error", BUS_ERROR)]
        if ep is not None:
            labels.append(("episode", ep.episode_id))
        if intent:
            labels.append(("intent", intent))
        if confirmed:
            labels.append(("confirmed_by", "qemu-bus-not-found"))
        if inferred:
            labels.append(("inferred", "; ".join(inferred)))
        return {
            "severity": severity, "summary": summary,
            "explanation": _explanation(bdf, prev, ep, cp, severity, why, method),
            "remedy": _remedy(bdf, prev, cp), "actor": actor,
            "netdev": lost.ifname if lost else None, "netns": lost.netns if lost else None,
            "sandbox_id": sandbox_id, "pod": pod, "pod_namespace": pod_ns,
            "labels": tuple(labels),
        }


def _severity(actor: ev.Process | None, cp: ColdPlug, intent: str,
              named_by_kata: str | None) -> tuple[ev.Severity, str]:
    """Critical when Kata moved it (a Kata shim, a sandbox's VF, or a VF Kata's own lines give
    to a sandbox), info when the move was declared, warning otherwise; with the reason."""
    if is_kata_shim(actor) or cp.sandbox is not None or named_by_kata is not None:
        why = ("the actor is a Kata shim" if is_kata_shim(actor)
               else f"the device belongs to Kata sandbox {cp.sandbox.sandbox_id[:12]}"
               if cp.sandbox else
               f"Kata's lines give the device to sandbox {(named_by_kata or '')[:12]}")
        return ev.Severity.CRITICAL, why
    if intent:
        return ev.Severity.INFO, f"declared intent: {intent}"
    return ev.Severity.WARNING, ("the actor is unknown" if actor is None
                                 else "the actor is not a Kata shim")


def _inferred(model: Model, bdf: str, prev: str, ep: Episode | None,
              logged_by: ev.Process | None) -> list[str]:
    """What the finding rests on that no input said outright: the driver the VF left, the
    kernel's side of the move, the actor."""
    rec = model.devices.get(bdf)
    inferred = []
    if prev == UNNAMED:
        inferred.append("the driver it left: no input names it")
    elif rec is not None and rec.host_driver == prev and rec.host_driver_from and \
            rec.host_driver_from not in ("a bind to it", "the driver it left",
                                         "the driver it was unbound from"):
        inferred.append(f"the driver it left, {prev}: from {rec.host_driver_from}")
    if ep is not None and any(x.source == ev.KATA_LOG for x in ep.events):
        inferred.append("the kernel's unbind/bind: from Kata's own lines (no kernel capture)")
    if logged_by is not None:
        inferred.append(f"the actor: the Kata shim (pid {logged_by.pid}) that logged about "
                        "this VF, no write attributed")
    return inferred


def _explanation(bdf: str, prev: str, ep: Episode | None, cp: ColdPlug, severity: ev.Severity,
                 why: str, method: str) -> str:
    """Why it is that severity, where cold_plug_vfio came from, and what QEMU and the VF's
    network will do."""
    lost = ep.lost if ep is not None else None
    if lost is not None:
        owner = f" of pod {lost.pod_namespace or '?'}/{lost.pod}" if lost.pod else ""
        netdev_text = (f" Its netdev {lost.ifname} vanished from netns {lost.netns}{owner} "
                       f"when it left {prev}; that network is gone until the VF is rebound "
                       f"to {prev} (it returns with a new ifindex and MAC).")
    else:
        netdev_text = (f" Its netdev (if it had one) vanished when it left {prev}; that "
                       "network is gone until the VF is rebound.")
    runtime_note = " runtime-rs has no check that refuses such pods." if cp.runtime == "rs" else ""
    return (
        f"Severity {severity.label}: {why}. The effective cold_plug_vfio is {cp.value}, from "
        f"{cp.origin}. Write sequence: {method}. With cold_plug_vfio=no-port Kata "
        f"cold-plugs the VF with an empty PCIe port prefix, so QEMU will exit with "
        f"`-device vfio-pci,host={bdf},...: {BUS_ERROR}` (Kata issue #10162) and the sandbox "
        f"fails to start.{netdev_text}{runtime_note}"
    )


def _remedy(bdf: str, prev: str, cp: ColdPlug) -> str:
    """The configuration fix, then the commands that give the VF back to its host driver."""
    where = f" of handler {', '.join(cp.handlers)}" if cp.handlers else ""
    driver = "<host driver>" if prev == UNNAMED else prev  # a command to paste, not a phrase
    return (
        f'Set cold_plug_vfio = "root-port" with pcie_root_port >= 1 in [hypervisor.qemu]'
        f"{where} (a config.d drop-in works), or run the Kata Go runtime >= 3.9, which "
        f"refuses such pods before touching the VF (runtime-rs has no such check). Then "
        f"give the VF back: echo {driver} > /sys/bus/pci/devices/{bdf}/driver_override; "
        f"echo {bdf} > /sys/bus/pci/drivers/vfio-pci/unbind; "
        f"echo {bdf} > /sys/bus/pci/drivers_probe."
    )
