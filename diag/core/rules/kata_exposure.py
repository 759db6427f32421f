"""Provides rule `kata-vfio-exposure`: a Kata handler exposed to a known Kata VFIO bug, before any pod fails.

Input: KataFactsObserved, one per handler, sent by the Kata source at start and whenever the
handler's configuration, its Kata version or the VFs pods can be given change (a postmortem
builds them from kata-env / `--version` output with the configuration and inventory given).
The judgment is the pure table `diag.core.kata_exposure.assess` (the model keeps it per
handler for the snapshot and the metric).

One finding per (handler, issue) the handler is exposed to now: a row whose VFs pods can be
given exist (or are not known). A latent row (no VF pods can be given now) opens nothing; the
snapshot and the metric (value 0) still show it. Severity is the row's: a VF that will be
stranded is an error, a pod Kata will refuse a warning, an unknown version a warning that
names the versions at risk. The finding is updated when what an operator acts on changes
(version, cold_plug_vfio, the fix), not when only the list of VFs does; it resolves when the
facts no longer give the row, saying what changed, or when the handler is gone.

What happened: a LogLineMatched that shows an issue an open finding names (QEMU's
`Bus '<unknown PCIePortBusPrefix: >0' not found` for #10162, Kata's refusal for #10210, ...)
joins that finding as evidence and its summary says it happened.
"""

from __future__ import annotations

from diag import events as ev
from diag.core import kata_exposure as kx
from diag.core.model import Model
from diag.core.rules import register
from diag.core.rules._base import ConditionRule
from diag.core.thresholds import CoreConfig


def _signature(row: kx.Exposure) -> tuple[object, ...]:
    """What an operator acts on: a change of it is an `updated` finding (the VF list is not)."""
    return (row.severity, row.title, row.fix, row.dropin, row.why[:2])


def what_changed(before: ev.KataHandlerFacts | None, after: ev.KataHandlerFacts) -> str:
    """The facts that differ, in words (the reason a finding resolved)."""
    if before is None:
        return "the facts no longer give it"
    out = []
    if before.version != after.version:
        src = f" (read from {after.version_source.detail})" if after.version_source else ""
        out.append(f"Kata is now {after.version or 'of unknown version'}{src}")
    if before.runtime != after.runtime:
        out.append(f"the runtime is now {'runtime-rs' if after.runtime == 'rs' else 'Go'}")
    if before.cold_plug_vfio != after.cold_plug_vfio:
        out.append(f"cold_plug_vfio is now {after.cold_plug_vfio!r} ({after.cold_plug_origin})")
    if before.pcie_root_port != after.pcie_root_port:
        out.append(f"pcie_root_port is now {after.pcie_root_port} ({after.pcie_root_port_origin})")
    if before.annotation_enabled != after.annotation_enabled:
        out.append("pods may " + ("now" if after.annotation_enabled else "no longer")
                   + f" set {kx.ANN_COLD}")
    if (before.vfs or not before.vfs_known) and not after.vfs and after.vfs_known:
        out.append(f"no VF can be given to pods now ({after.vfs_basis})")
    return "; ".join(out) or "the facts no longer give it"


@register
class KataExposureRule(ConditionRule):
    """Open per (handler, known issue) the handler is exposed to; resolve when the facts change."""

    id = "kata-vfio-exposure"
    events = (ev.KataFactsObserved, ev.LogLineMatched)

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.facts: dict[str, ev.KataHandlerFacts] = {}
        self.signatures: dict[str, tuple[object, ...]] = {}
        self.happened: dict[str, str] = {}
        """Key -> the signature of the line that showed it happened."""

    def on_event(self, model: Model, event: ev.Event) -> list[ev.Finding]:
        if isinstance(event, ev.LogLineMatched):
            return self._line(model, event)
        if not isinstance(event, ev.KataFactsObserved):
            return []
        f = event.facts
        before = self.facts.get(f.handler)
        mine = [k for k in self.open_ if k.split("/", 1)[0] == f.handler]
        if event.gone:
            self.facts.pop(f.handler, None)
            return self._resolve(mine, event.ts_ns, f"handler {f.handler} is no longer configured")
        self.facts[f.handler] = f
        a = model.kata_exposure.get(f.handler) or kx.assess(f)
        rows = {f"{f.handler}/{r.issue}": r for r in a.rows if r.exposed}
        out = self._resolve([k for k in mine if k not in rows], event.ts_ns, what_changed(before, f))
        for key, row in rows.items():
            if key not in self.open_:
                out.append(self._open(model, key, row, f, event))
                continue
            explanation, remedy = _explain(row, f), _remedy(row)
            if _signature(row) != self.signatures.get(key):
                self.signatures[key] = _signature(row)
                changed = self.update(key, event.ts_ns, severity=row.severity,
                                      summary=self._summary(key, row), explanation=explanation,
                                      remedy=remedy, labels=_labels(row, f, self.happened.get(key)))
                if changed is not None:
                    out.append(changed)
            else:  # only the VFs changed: kept quietly (snapshots show the current list)
                st = self.open_[key]
                st.finding = ev.replace(st.finding, explanation=explanation,
                                     labels=_labels(row, f, self.happened.get(key)))
        return out

    def _summary(self, key: str, row: kx.Exposure) -> str:
        seen = self.happened.get(key)
        return row.summary + (f" (it happened: {seen})" if seen else "")

    def _open(self, model: Model, key: str, row: kx.Exposure, f: ev.KataHandlerFacts,
              event: ev.KataFactsObserved) -> ev.Finding:
        self.signatures[key] = _signature(row)
        return self.open(
            model, key, ts_ns=event.ts_ns, trigger_ns=event.ts_ns, severity=row.severity,
            summary=self._summary(key, row),
            evidence=(ev.Evidence(ts_ns=event.ts_ns, source=event.source, kind=event.kind,
                                  text=_evidence_text(row, f)),),
            explanation=_explain(row, f), remedy=_remedy(row), labels=_labels(row, f, None))

    def _resolve(self, keys: list[str], ts_ns: int, reason: str) -> list[ev.Finding]:
        for k in keys:
            self.signatures.pop(k, None)
            self.happened.pop(k, None)
        return self.resolve_all(sorted(keys), ts_ns, reason)

    def _line(self, model: Model, e: ev.LogLineMatched) -> list[ev.Finding]:
        issue = kx.issue_of_line(e.signature, e.text)
        if issue is None:
            return []
        sb = model.sandboxes.get(e.sandbox_id) if e.sandbox_id else None
        keys = [k for k in self.open_ if k.endswith(f"/{issue}")
                and (sb is None or not sb.handler or k.split("/", 1)[0] == sb.handler)]
        out = []
        for key in keys:
            st = self.open_[key]
            line = ev.Evidence(ts_ns=e.ts_ns, source=e.source, kind=e.kind,
                               text=f"{e.signature}: {e.text[:300]}")
            if key in self.happened:  # already said: the line joins the evidence quietly
                if len(st.finding.evidence) < 20:
                    st.finding = ev.replace(st.finding, evidence=(*st.finding.evidence, line))
                continue
            self.happened[key] = f"{e.signature} at {e.origin or e.source}"
            old = st.finding
            labels = (*((k, v) for k, v in old.labels if k != "happened"), ("happened", e.signature))
            changed = self.update(key, e.ts_ns, summary=old.summary + f" (it happened: {self.happened[key]})",
                                  evidence=(*old.evidence, line), labels=labels,
                                  sandbox_id=e.sandbox_id or old.sandbox_id,
                                  pod=sb.pod if sb else old.pod,
                                  pod_namespace=sb.pod_namespace if sb else old.pod_namespace)
            if changed is not None:
                out.append(changed)
        return out


def _evidence_text(row: kx.Exposure, f: ev.KataHandlerFacts) -> str:
    vfs = f"{len(f.vfs)} VF(s) pods can be given" if f.vfs_known else "VFs not known"
    return "; ".join((*row.why[:2], vfs))


def _explain(row: kx.Exposure, f: ev.KataHandlerFacts) -> str:
    facts = "; ".join(f"{x.text} [{x.basis}]" for x in row.facts)
    return (". ".join(row.why) + f". First VF pod: {row.first_pod}"
            + (f" Facts: {facts}." if facts else "") + (f" {row.url}" if row.url else ""))


def _remedy(row: kx.Exposure) -> str:
    return row.fix + (f" Drop-in: {kx.dropin_line(row.dropin)}" if row.dropin else "")


def _labels(row: kx.Exposure, f: ev.KataHandlerFacts, happened: str | None) -> tuple[tuple[str, str], ...]:
    src = f.version_source
    out = [("handler", f.handler), ("issue", row.issue), ("runtime", f.runtime),
           ("version", f.version), ("version_source", src.source if src else ""),
           ("version_detail", src.detail if src else ""),
           ("cold_plug_vfio", f.cold_plug_vfio), ("cold_plug_origin", f.cold_plug_origin),
           ("vfs", str(len(f.vfs)) if f.vfs_known else "unknown"),
           ("inference", "yes" if row.inference else "no")]
    if happened:
        out.append(("happened", happened.split(" at ", 1)[0]))
    return tuple(out)
