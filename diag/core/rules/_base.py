"""Provides ConditionRule, the base of the built-in rules: finding lifecycle, ids and episodes.

A finding is a condition (node-problem-detector style): it opens, is updated while the
condition lasts and new evidence joins its episode, and resolves with a time and a reason.
`finding_id` is `<rule>/<key>/<trigger_ns>`, where `trigger_ns` is the time of the kernel fact
that defines the condition (the bind, the unbind, the loss), never of the event that happened
to arrive first, so reordering between sockets keeps ids stable.

Also shared helpers: who counts as a Kata shim, and the effective `cold_plug_vfio` for a device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec

# A finding's copy on each transition: what `diag.events.replace` does for a Struct, without
# its type test and second keyword pass.
from msgspec.structs import replace as _copy

from diag import events as ev
from diag.core.episodes import Episode
from diag.core.model import Model
from diag.core.thresholds import CoreConfig
from diag.events import replace

KATA_SHIM_EXE = "containerd-shim-kata-v2"
KATA_SHIM_COMM = "containerd-shim"
"""`/proc/<pid>/comm` keeps 15 characters: the Kata shim shows as `containerd-shim`."""
COLD_PLUG_DISABLED = ("no-port", "")
"""Kata maps an empty cold_plug_vfio to no-port (`coldPlugVFIO()`)."""
HOST_RESTING_DRIVERS = ("vfio-pci", "pci-stub", "pcieport")
"""Drivers that keep an IOMMU group viable for VFIO (besides no driver at all)."""
QUIET_FIELDS = frozenset({"evidence"})
"""Fields whose change alone does not emit an `updated` transition."""


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def is_kata_shim(p: ev.Process | None) -> bool:
    """True for the Go or runtime-rs Kata shim (by exe basename, runtime tag, or comm)."""
    if p is None:
        return False
    if p.kata_runtime is not None:
        return True
    if p.exe:
        return basename(p.exe) == KATA_SHIM_EXE
    if KATA_SHIM_EXE in p.cmdline:
        return True
    return p.comm == KATA_SHIM_COMM


def actor_names(p: ev.Process) -> tuple[str, ...]:
    """The names a configuration may use for a process: comm and exe basename."""
    names = [p.comm] if p.comm else []
    if p.exe:
        names.append(basename(p.exe))
    return tuple(names)


class ColdPlug(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The effective cold_plug_vfio that applies to a device move, and where it came from
    (immutable values only: untracked by the cycle collector)."""

    value: str
    origin: str
    assumed: bool = False
    sandbox: ev.SandboxStarted | None = None
    handlers: tuple[str, ...] = ()
    runtime: str | None = None
    """`go` or `rs` when known (from the sandbox, the handler or the actor)."""
    pcie_root_port: int | None = None

    @property
    def disabled(self) -> bool:
        return self.value in COLD_PLUG_DISABLED


def effective_cold_plug(model: Model, bdf: str, actor: ev.Process | None,
                        sandbox_id: str | None = None) -> ColdPlug:
    """cold_plug_vfio of the device's sandbox, else of the host's Kata handler(s), else Kata's
    built-in default `no-port` (marked assumed). Derived from the Kata configurations and
    sandboxes alone, so it is kept until either changes (`Model.kata_derived`)."""
    key = ("cold_plug", bdf, actor.sandbox_id if actor else None,
           actor.kata_runtime if actor else None, sandbox_id)
    derived = model.kata_derived
    cp: ColdPlug | None = derived.get(key)
    if cp is None:
        if len(derived) >= DERIVED_MAX:
            derived.clear()
        cp = derived[key] = _effective_cold_plug(model, bdf, actor, sandbox_id)
    return cp


DERIVED_MAX = 4096
"""Cold plug answers kept between Kata changes (devices x writers; a storm only refills it)."""


def _effective_cold_plug(model: Model, bdf: str, actor: ev.Process | None,
                         sandbox_id: str | None) -> ColdPlug:
    sb = model.sandbox_for(bdf)
    if sb is None:
        for sid in (actor.sandbox_id if actor else None, sandbox_id):
            if sid and sid in model.sandboxes:
                sb = model.sandboxes[sid]
                break
    if sb is not None and sb.cold_plug_origin == "unknown":
        # Known from a process listing only: its handler's configuration decides.
        found = effective_cold_plug(model, "", actor, None) if bdf else None
        if found is not None and found.sandbox is None:
            return replace(found, sandbox=sb, runtime=found.runtime or sb.runtime)
    if sb is not None and sb.cold_plug_origin != "unknown":
        return ColdPlug(value=sb.cold_plug_vfio or "no-port",
                        origin=f"sandbox {sb.sandbox_id[:12]} ({sb.cold_plug_origin})",
                        sandbox=sb, runtime=sb.runtime, pcie_root_port=sb.pcie_root_port,
                        handlers=(sb.handler,) if sb.handler else ())
    configs = [model.kata_configs[h] for h in sorted(model.kata_configs)]
    if actor is not None and actor.kata_runtime:
        same = [c for c in configs if c.runtime == actor.kata_runtime]
        configs = same or configs
    if not configs:
        return ColdPlug(value="no-port", assumed=True,
                        origin="Kata's built-in default (no Kata configuration known)",
                        runtime=actor.kata_runtime if actor else None)
    disabled = [c for c in configs if c.cold_plug_vfio in COLD_PLUG_DISABLED]
    chosen = disabled or configs
    first = chosen[0]
    where = ", ".join(
        f"{c.handler} ({c.path or 'built-in default'})" for c in chosen
    )
    return ColdPlug(
        value=first.cold_plug_vfio or "no-port",
        origin=f"Kata handler {where}",
        assumed=all(c.assumed for c in chosen),
        handlers=tuple(c.handler for c in chosen),
        runtime=first.runtime if len({c.runtime for c in chosen}) == 1 else None,
        pcie_root_port=first.pcie_root_port,
    )


class _Open(msgspec.Struct):
    finding: ev.Finding
    episode: Episode | None
    seen_version: int
    seen_facts: int = 0
    rendered: int = -1
    """Episode version `finding.evidence` was rendered at (rendered again only when shown)."""
    dirty: bool = False
    """Set by rules whose evidence is not one episode's (they override `_stale`)."""
    facts: Any = None
    """What the rule last worded the finding from (a rule may compare before rewording)."""


class ConditionRule:
    """Base of a rule whose findings open, update and resolve. Subclasses set `id`, `events`
    (the event types they react to; None = all) and `ticks` (whether time alone matters)."""

    id: ClassVar[str] = ""
    events: ClassVar[tuple[type[ev.Event], ...] | None] = None
    ticks: ClassVar[bool] = False

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.open_: dict[str, _Open] = {}
        """key -> the active finding and the episode it follows."""
        self._by_bdf: dict[str, list[str]] = {}
        self.follow: dict[str, int] = {}
        """BDFs whose episodes this rule wants to hear about (the correlator skips the rest)."""
        self.followed: dict[str, list[Any]] | None = None
        """Set by the correlator: BDF -> the rules that follow it, in rule order, kept by each
        rule as it follows and unfollows; an episode costs only the rules that follow it."""
        self.follow_rank = 0
        """This rule's place in that order (set by the correlator)."""
        self._severity = dict(config.severity_overrides).get(self.id)

    def _follow(self, bdf: str) -> None:
        n = self.follow.get(bdf, 0)
        self.follow[bdf] = n + 1
        index = self.followed
        if n == 0 and index is not None:
            rules = index.setdefault(bdf, [])
            i = len(rules)
            while i and rules[i - 1].follow_rank > self.follow_rank:
                i -= 1
            rules.insert(i, self)

    def _unfollow(self, bdf: str) -> None:
        n = self.follow.get(bdf, 0) - 1
        if n > 0:
            self.follow[bdf] = n
            return
        self.follow.pop(bdf, None)
        index = self.followed
        rules = index.get(bdf) if index is not None else None
        if rules is not None and index is not None and self in rules:
            rules.remove(self)
            if not rules:
                del index[bdf]

    def _stale(self, st: _Open) -> dict[str, object]:
        """The changes that bring a finding's evidence up to date with its episode (none when
        nothing grew); marks it rendered. Rules with other evidence override this."""
        ep = st.episode
        if ep is None or st.rendered == ep.version:
            return {}
        st.rendered = ep.version
        return {"evidence": ep.evidence(), "last_ns": max(st.finding.last_ns, ep.last_ns),
                "first_ns": min(st.finding.first_ns, ep.first_ns)}

    def _render(self, st: _Open) -> ev.Finding:
        """The finding with its evidence up to date."""
        stale = self._stale(st)
        if stale:
            st.finding = _copy(st.finding, **stale)
        return st.finding

    # ---- the Rule protocol -------------------------------------------------------------------

    def on_event(self, model: Model, event: ev.Event) -> list[ev.Finding]:
        """The rule's `on_<kind>` for the event's kind (the correlator calls those directly)."""
        handler = getattr(self, f"on_{event.kind}", None)
        return handler(model, event) if handler is not None else []

    def on_tick(self, model: Model, now_ns: int) -> list[ev.Finding]:
        return []

    def on_episode(self, model: Model, episode: Episode, now_ns: int) -> list[ev.Finding]:
        """New evidence joined `episode`: mark the findings that follow it stale, and reassess
        them (`refresh`) when what the episode says changed."""
        keys = self._by_bdf.get(episode.bdf)
        if not keys:
            return []
        out = []
        for key in list(keys):
            st = self.open_.get(key)
            if st is None or st.episode is not episode or st.seen_version == episode.version:
                continue
            st.seen_version = episode.version
            if st.seen_facts != episode.facts:
                st.seen_facts = episode.facts
                f = self.refresh(model, key, st.finding, episode, now_ns)
                if f is not None:
                    out.append(f)
        return out

    def refresh(self, model: Model, key: str, finding: ev.Finding, episode: Episode | None,
                now_ns: int) -> ev.Finding | None:
        """Reassess a finding after its episode's facts changed; default: nothing to say."""
        return None

    # ---- lifecycle helpers -------------------------------------------------------------------

    def is_open(self, key: str) -> bool:
        return key in self.open_

    def keys_for(self, bdf: str) -> tuple[str, ...]:
        keys = self._by_bdf.get(bdf)
        return tuple(keys) if keys else ()

    def open(self, model: Model, key: str, *, ts_ns: int, trigger_ns: int,
             severity: ev.Severity, summary: str, bdf: str | None = None,
             episode: Episode | None = None, **fields: object) -> ev.Finding:
        """Open a finding for `key` (the caller checked it is not open)."""
        if self._severity:
            severity = ev.Severity.parse(self._severity)
        rec = model.devices.get(bdf) if bdf is not None else None
        if rec is not None:
            dev = rec.device
            fields.setdefault("pf", dev.pf)
            fields.setdefault("vf_index", dev.vf_index)
        explicit_evidence = "evidence" in fields
        if episode is not None:
            if not explicit_evidence:
                fields["evidence"] = episode.evidence()
            synthetic = bool(fields.pop("synthetic", episode.synthetic))
            first_ns = min(trigger_ns, episode.first_ns)
            last_ns = max(ts_ns, episode.last_ns)
            v = episode.version
        else:
            synthetic = bool(fields.pop("synthetic", False))
            first_ns, last_ns, v = trigger_ns, ts_ns, 0
        f = ev.Finding(
            ts_ns=ts_ns, source="core", synthetic=synthetic,
            finding_id=f"{self.id}/{key}/{trigger_ns}", rule=self.id, severity=severity,
            summary=summary + " [synthetic]" if synthetic else summary, status="open", bdf=bdf,
            first_ns=first_ns, last_ns=last_ns,
            **fields,  # type: ignore[arg-type]
        )
        rendered = v if episode is not None and not explicit_evidence else -1
        self.open_[key] = _Open(f, episode, v, episode.facts if episode else 0, rendered)
        if bdf:
            keys = self._by_bdf.get(bdf)
            if keys is None:
                self._by_bdf[bdf] = [key]
            else:
                keys.append(key)
            self._follow(bdf)
        return f

    def update(self, key: str, ts_ns: int, **changes: object) -> ev.Finding | None:
        """Apply `changes` to an open finding. Returns the `updated` record when something an
        operator acts on changed (severity, summary, actor, device, pod, labels, ...); new
        evidence alone is kept quietly (snapshots show it, the resolved record carries it), so
        one move does not log the same finding once per source event."""
        st = self.open_.get(key)
        if st is None:
            return None
        old = st.finding
        if "severity" in changes and self._severity:
            changes["severity"] = ev.Severity.parse(self._severity)
        if "summary" in changes and old.synthetic:
            changes["summary"] = f"{changes['summary']} [synthetic]"
        changed = visible = False
        for k, v in changes.items():
            if getattr(old, k) != v:
                changed = True
                if k not in QUIET_FIELDS:
                    visible = True
                    break
        if not changed:
            return None
        if not visible:
            st.finding = _copy(old, **changes)
            if "evidence" in changes and st.episode is not None:
                st.rendered = st.episode.version
            return None
        ep = st.episode
        merged = {**self._stale(st), **changes}
        merged["last_ns"] = max(old.last_ns, ts_ns, ep.last_ns if ep else 0)
        f = _copy(old, ts_ns=ts_ns, status="updated", **merged)
        st.finding = f
        return f

    def current(self) -> list[ev.Finding]:
        """The open findings as they are now (quiet evidence included)."""
        return [self._render(st) for st in self.open_.values()]

    def resolve(self, key: str, ts_ns: int, reason: str) -> ev.Finding | None:
        """Resolve an open finding, saying when and why."""
        st = self.open_.pop(key, None)
        if st is None:
            return None
        old = st.finding
        changes = self._stale(st)  # a new dict each time: ours to fill
        changes["last_ns"] = max(old.last_ns, ts_ns, st.episode.last_ns if st.episode else 0)
        f = _copy(old, ts_ns=ts_ns, status="resolved", resolved_ns=ts_ns,
                    resolved_reason=reason, **changes)
        if f.bdf:
            keys = self._by_bdf.get(f.bdf)
            if keys is not None and key in keys:
                keys.remove(key)
                self._unfollow(f.bdf)
                if not keys:
                    del self._by_bdf[f.bdf]
        return f

    def resolve_all(self, keys: Iterable[str], ts_ns: int, reason: str) -> list[ev.Finding]:
        if not keys:
            return []
        out = []
        for k in list(keys):
            f = self.resolve(k, ts_ns, reason)
            if f is not None:
                out.append(f)
        return out


def device_label(model: Model, bdf: str) -> str:
    """`0000:01:10.0 (VF 0 of 0000:01:00.0)` when the device is a known VF."""
    rec = model.devices.get(bdf)
    if rec is not None and rec.device.pf is not None:
        idx = rec.device.vf_index
        return f"{bdf} (VF {'?' if idx is None else idx} of {rec.device.pf})"
    return bdf


def is_vf(model: Model, bdf: str) -> bool:
    rec = model.devices.get(bdf)
    return rec is not None and (rec.device.role == "vf" or rec.device.pf is not None)


class Wake:
    """The earliest deadline of every Timers attached to it: the correlator calls `on_tick`
    only once event time passes it, so an event costs one comparison, not one call per rule."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: int | None = None


class Timers:
    """Deadlines by key, in event time; `pop_due` is O(1) until the earliest one passes."""

    __slots__ = ("due", "next", "wake")

    def __init__(self) -> None:
        self.due: dict[str, int] = {}
        self.next: int | None = None
        self.wake: Wake | None = None
        """Set by the correlator; kept no later than this rule's earliest deadline."""

    def set(self, key: str, at_ns: int) -> None:
        self.due[key] = at_ns
        if self.next is None or at_ns < self.next:
            self.next = at_ns
        w = self.wake
        if w is not None and (w.at is None or at_ns < w.at):
            w.at = at_ns

    def cancel(self, key: str) -> None:
        self.due.pop(key, None)
        if not self.due:
            self.next = None

    def __contains__(self, key: object) -> bool:
        return key in self.due

    def pop_due(self, now_ns: int) -> list[str]:
        """Keys whose deadline has passed, in key order (deterministic)."""
        if self.next is None or now_ns < self.next:
            return []
        keys = sorted(k for k, t in self.due.items() if t <= now_ns)
        for k in keys:
            del self.due[k]
        self.next = min(self.due.values()) if self.due else None
        return keys
