"""Provides the dashboard's pure formatting helpers: HostState pieces -> Rich Text, no Textual.

Every string that comes from the outside world (interface names, process names, log text,
paths) goes through `diag.common.text.safe` and into a `rich.text.Text` built without markup parsing,
so `[red]x` shows as `[red]x` and an ESC shows as `\\x1b`. Times are formatted from the
snapshot's own clock (event time), never from `now()`, so live and replay render alike and
snapshot tests are deterministic. Unit-tested in tests/unit/tui/test_tui_format.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rich.text import Text

from diag import events as ev
from diag import render
from diag.common.text import safe
from diag.core.kata_exposure import Assessment, Exposure
from diag.core.state import DeviceView, HostState, SourceHealth

NS = 1_000_000_000

SEVERITY_STYLE: dict[ev.Severity, str] = {
    ev.Severity.INFO: "cyan",
    ev.Severity.WARNING: "yellow",
    ev.Severity.ERROR: "bold red",
    ev.Severity.CRITICAL: "bold white on red",
}
VFIO_STYLE = "bold black on yellow"
STOPPED = "stopped"
"""The reason the runtime gives a source it stopped on shutdown."""
SOURCE_ORDER = ("uevent", "links", "ebpf", "kata")
"""The sources the header always shows, in this order, even before they report."""


def text(value: object, style: str = "", limit: int | None = None) -> Text:
    """An outside string as literal Text: controls escaped, markup never interpreted."""
    return Text("" if value is None else safe(value, limit), style=style)


def tail(value: object, limit: int) -> str:
    """A safe string cut from the left (`…/configuration-qemu.toml`): the end of a path matters."""
    s = safe(value)
    if len(s) <= limit:
        return s
    return "…" + s[len(s) - max(0, limit - 1):]


def clock(ts_ns: int | None) -> str:
    """`HH:MM:SS.mmm` (UTC) of an event stamp; `-` when unknown."""
    if not ts_ns:
        return "-"
    secs, frac = divmod(ts_ns, NS)
    return time.strftime("%H:%M:%S", time.gmtime(secs)) + f".{frac // 1_000_000:03d}"


def duration(ns: int | None) -> str:
    """A short human duration: `850ms`, `12s`, `4m05s`, `2h03m`, `3d04h`; `-` when unknown."""
    if ns is None or ns < 0:
        return "-"
    if ns < NS:
        return f"{ns // 1_000_000}ms"
    s = ns // NS
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def since(view: DeviceView, now_ns: int) -> str:
    """How long the device has had its current driver, relative to the snapshot time."""
    if view.since_ns is None:
        return "start"
    return duration(now_ns - view.since_ns)


def driver_text(driver: str | None) -> Text:
    """A driver name; vfio-pci stands out, no driver is dim."""
    if driver is None:
        return Text("(none)", style="dim")
    if driver == "vfio-pci":
        # A span, not the Text's base style: a base style would fill a whole table cell.
        return Text.assemble((driver, VFIO_STYLE))
    return text(driver)


def severity_text(sev: ev.Severity) -> Text:
    """`CRITICAL` in its colour, as a span so that text appended after it stays plain."""
    return Text.assemble((sev.label.upper(), SEVERITY_STYLE.get(sev, "")))


def events_per_second(state: HostState, window_ns: int = 10 * NS, now_ns: int | None = None) -> float:
    """Event rate over the last `window_ns` before `now_ns` (the snapshot's own time when None:
    replays and tests), from the snapshot's recent ring."""
    recent = state.recent
    end = state.ts_ns if now_ns is None else max(now_ns, state.ts_ns)
    if not recent or not end:
        return 0.0
    start = end - window_ns
    n = 0
    oldest = end
    for e in reversed(recent):
        if e.ts_ns <= start:
            break
        n += 1
        oldest = e.ts_ns
    if n == 0:
        return 0.0
    # A full ring (CoreConfig.recent_events, 2000 by default) that spans less than the window:
    # the rate is over what the ring spans. A ring still filling is rated over the window.
    full = n == len(recent) and len(recent) >= 1000
    span = end - oldest if full else window_ns
    return n * NS / max(span, NS // 1000)


def last_event_ns(state: HostState) -> int:
    """Time of the newest event in the snapshot (0 when none)."""
    return max((e.ts_ns for e in state.recent[-64:]), default=0) if state.recent else 0


def rate_text(rate: float) -> str:
    if rate >= 10_000:
        return f"{rate / 1000:.0f}k ev/s"
    if rate >= 1000:
        return f"{rate / 1000:.1f}k ev/s"
    if rate >= 10:
        return f"{rate:.0f} ev/s"
    return f"{rate:.1f} ev/s"


def sources_for_header(state: HostState) -> list[SourceHealth]:
    """The four core sources (placeholders when not reported yet), then any other with health."""
    by_name = {s.name: s for s in state.sources}
    out = [by_name.get(n) or SourceHealth(name=n, up=False, reason="not reported") for n in SOURCE_ORDER]
    out.extend(
        s for s in state.sources
        if s.name not in SOURCE_ORDER and (s.mode or s.reason or s.up)
    )
    return out


def source_text(s: SourceHealth, *, reason_limit: int = 40) -> Text:
    """`uevent ✓`, `ebpf ✓ kprobe`, `kata ✗ no config found`."""
    out = Text()
    out.append(safe(s.name), style="bold")
    stopped = not s.up and s.reason == STOPPED
    starting = not s.up and s.reason.startswith("starting:")
    if s.up:
        out.append(" ✓", style="green")
    elif starting:  # eBPF compiling (seconds; minutes under emulation): the one word, not why
        out.append(" … starting", style="yellow")
    elif stopped:  # the agent shut down cleanly (the end of a recording): not a failure
        out.append(" ■ stopped", style="dim")
        return out
    else:
        out.append(" ✗", style="red")
    if s.mode:
        out.append(" " + safe(s.mode, 16), style="cyan")
    if not s.up and s.reason and not starting:
        out.append(" " + safe(s.reason, reason_limit), style="dim")
    if s.lost:
        out.append(f" lost {s.lost}", style="bold red")
    if s.lost_incidents:  # sizes unknown: at least one event each
        out.append(f" lost ≥{s.lost_incidents}", style="bold red")
    return out


def exposure_label(rows: Iterable[Exposure]) -> str:
    """`exposed to Kata #10162` (the issues a handler is exposed to now), empty when none."""
    issues = [f"#{r.issue}" if r.issue.isdigit() else "unknown-version" for r in rows if r.exposed]
    return "exposed to Kata " + ", ".join(dict.fromkeys(issues)) if issues else ""


def kata_text(configs: Iterable[ev.KataConfig], *, path_limit: int = 48,
              exposure: Iterable[Assessment] = ()) -> Text:
    """Each Kata handler with its config path and effective cold_plug_vfio, and the known Kata
    VFIO bugs it is exposed to (rule kata-vfio-exposure) before its path."""
    exposed = {a.handler: exposure_label(a.rows) for a in exposure}
    configs = list(configs)
    out = Text()
    if not configs:
        out.append("kata ", style="bold")
        out.append("no config seen: assumed default cold_plug_vfio=no-port", style="dim")
        return out
    for i, c in enumerate(configs):
        if i:
            out.append("  ")
        out.append(safe(c.handler, 24), style="bold")
        out.append(f" ({c.runtime})" if c.runtime else "", style="dim")
        out.append(" cold_plug_vfio=")
        style = "bold yellow" if c.cold_plug_vfio == "no-port" else "green"
        out.append(safe(c.cold_plug_vfio, 16), style=style)
        if exposed.get(c.handler):
            out.append(" " + exposed[c.handler], style="bold red")
        if c.assumed or c.path is None:
            out.append(" assumed default", style="dim italic")
        else:
            out.append(" " + tail(c.path, path_limit), style="dim")
    return out


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def device_order(devices: Iterable[DeviceView]) -> list[tuple[DeviceView, int]]:
    """PFs each followed by their VFs (depth 1, by VF index), then the rest, by BDF.

    Trees that matter for passthrough come first (a PF with VFs, anything on vfio-pci or with a
    driver_override), so they are on screen even at 80x24.
    """
    views = sorted(devices, key=lambda d: d.bdf)
    by_bdf = {d.bdf: d for d in views}
    children: dict[str, list[DeviceView]] = {}
    for d in views:
        pf = d.device.pf
        if pf and pf in by_bdf:
            children.setdefault(pf, []).append(d)
    trees: list[list[tuple[DeviceView, int]]] = []
    for d in views:
        pf = d.device.pf
        if pf and pf in by_bdf:
            continue
        kids = children.get(d.bdf, [])
        kids.sort(key=lambda v: (v.device.vf_index if v.device.vf_index is not None else 1 << 30, v.bdf))
        trees.append([(d, 0), *((k, 1) for k in kids)])

    def matters(tree: list[tuple[DeviceView, int]]) -> bool:
        return any(
            v.device.role in ("pf", "vf") or v.driver == "vfio-pci" or v.driver_override
            for v, _ in tree
        )

    trees.sort(key=lambda t: 0 if matters(t) else 1)  # stable: BDF order within each group
    return [row for tree in trees for row in tree]


def device_name(view: DeviceView, limit: int = 40) -> str:
    d = view.device
    name = d.device_name or d.vendor_name
    ident = f"{d.vendor}:{d.device}" if d.vendor or d.device else ""
    return safe(name or ident or "?", limit)


def role_tag(view: DeviceView) -> str:
    d = view.device
    if d.role == "pf":
        n = d.sriov_numvfs if d.sriov_numvfs is not None else len(d.vfs)
        return f"PF {n}/{d.sriov_totalvfs if d.sriov_totalvfs is not None else '?'}"
    if d.role == "vf":
        return f"VF {d.vf_index if d.vf_index is not None else '?'}"
    return ""


def netdev_text(view: DeviceView, limit: int = 28) -> Text:
    if not view.netdev:
        return Text("-", style="dim")
    out = text(view.netdev, limit=16)
    ns = view.netns
    if ns and ns != "host":  # in the pod's namespace: say whose
        out.append("@" + safe(ns, limit), style="magenta")
        if view.pod:
            out.append(" pod " + safe(view.pod, limit), style="magenta")
    return out


def sandbox_text(view: DeviceView, limit: int = 16) -> Text:
    """The device's sandbox and pod (`Model.owner`): dim once the sandbox is gone."""
    if not view.sandbox_id and not view.pod:
        return Text("-", style="dim")
    style = "magenta" if view.sandbox_running else "dim magenta"
    out = Text()
    if view.sandbox_id:
        out.append(safe(view.sandbox_id, limit), style=style)
    if view.pod:
        out.append((" " if view.sandbox_id else "") + safe(pod_label(view.pod, view.pod_namespace), 32),
                   style=style)
    if view.sandbox_id and not view.sandbox_running:
        out.append(" (gone)", style="dim")
    return out


def pod_text(view: DeviceView, limit: int = 20) -> Text:
    """The pod of the device (`ns/pod`), else its sandbox's short id; dim once it is gone."""
    style = "magenta" if view.sandbox_running else "dim magenta"
    if view.pod:
        return text(pod_label(view.pod, view.pod_namespace), style, limit)
    if view.sandbox_id:
        return text(view.sandbox_id[:12], style, limit)
    return Text("-", style="dim")


def pod_label(pod: str | None, namespace: str | None) -> str:
    return render.pod_label(pod, namespace)


def mover_text(actor: ev.Process | None, limit: int = 24) -> Text:
    """`comm[pid]` of who moved the device last; `-` when nobody is known to have."""
    if actor is None:
        return Text("-", style="dim")
    pid = f"[{actor.pid}]"
    out = text(actor.comm or "?", "", limit=max(4, limit - len(pid)))
    out.append(pid, style="dim")
    return out


def actor_text(actor: ev.Process | None, limit: int = 32) -> Text:
    """`comm[pid]` with the sandbox or pod it belongs to."""
    if actor is None:
        return Text("unknown actor", style="dim")
    out = text(actor.comm or "?", "bold", limit=limit)
    out.append(f"[{actor.pid}]")
    if actor.sandbox_id:
        out.append(" sandbox " + safe(actor.sandbox_id, 16), style="magenta")
    elif actor.pod:
        out.append(" pod " + safe(actor.pod, 32), style="magenta")
    return out


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


def event_bdf(e: ev.Event) -> str | None:
    """The PCI device an event is about, if any."""
    bdf = getattr(e, "bdf", None)
    if isinstance(bdf, str):
        return bdf
    return None


def event_sandbox(e: ev.Event) -> str | None:
    sid = getattr(e, "sandbox_id", None)
    if isinstance(sid, str):
        return sid
    actor = getattr(e, "actor", None)
    if isinstance(actor, ev.Process):
        return actor.sandbox_id
    netns = getattr(e, "netns", None)
    if isinstance(netns, ev.NetnsRef):
        return netns.sandbox_id
    return None


def event_pod(e: ev.Event) -> tuple[str | None, str | None]:
    """(pod, namespace) an event names itself: its own fields, its actor's, its netns's."""
    pod = getattr(e, "pod", None)
    if isinstance(pod, str) and pod:
        ns = getattr(e, "pod_namespace", None)
        return pod, ns if isinstance(ns, str) else None
    for holder in (getattr(e, "actor", None), getattr(e, "netns", None), getattr(e, "holder", None)):
        if isinstance(holder, ev.Process | ev.NetnsRef) and holder.pod:
            return holder.pod, holder.pod_namespace
    return None, None


KIND_STYLE = {
    "device_bound": "bold",
    "device_unbound": "bold",
    "sysfs_write_observed": "cyan",
    "events_lost": "bold red",
    "decode_failed": "red",
    "finding": "yellow",
}
LATE_MARK_NS = 1_000_000
"""A record that arrives this much (or more) after a newer one is marked late in the stream."""


def event_line(e: ev.Event, width: int = 0, late_ns: int = 0) -> Text:
    """One row of the event stream: time, source, kind, marks, summary; `late_ns` > 0 marks a
    record that arrived after newer ones (shown at its own time, with how late it was)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(clock(e.ts_ns)[:12], style="dim")
    out.append(" ")
    out.append(safe(e.source, 7).ljust(7), style="blue")
    out.append(" ")
    if late_ns >= LATE_MARK_NS:
        out.append(f"late +{duration(late_ns)} ", style="bold yellow")
    if e.synthetic:
        out.append("SYNTH ", style="bold magenta")
    if e.resync:
        out.append("RESYNC ", style="bold cyan")
    style = KIND_STYLE.get(e.kind, "")
    if e.kind in ("device_bound",) and getattr(e, "driver", None) == "vfio-pci":
        style = VFIO_STYLE
    out.append(render.stream(e), style=style)
    if width:
        out.truncate(width, overflow="ellipsis")
    return out


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What the snapshot knows about who owns what, for filters on events that do not name it
    themselves: a device's sandbox and pod (`Model.owner`), a sandbox's pod."""

    sandbox_of: Mapping[str, str] = field(default_factory=dict)
    """BDF -> sandbox id."""
    pod_of: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    """BDF or sandbox id -> (pod, namespace)."""

    @classmethod
    def of(cls, state: HostState) -> FilterContext:
        sandbox_of: dict[str, str] = {}
        pod_of: dict[str, tuple[str, str | None]] = {}
        for sb in state.sandboxes:
            if sb.pod:
                pod_of[sb.sandbox_id] = (sb.pod, sb.pod_namespace)
        for d in state.devices:
            if d.sandbox_id:
                sandbox_of[d.bdf] = d.sandbox_id
            if d.pod:
                pod_of[d.bdf] = (d.pod, d.pod_namespace)
                if d.sandbox_id:
                    pod_of.setdefault(d.sandbox_id, (d.pod, d.pod_namespace))
        return cls(sandbox_of, pod_of)


FILTER_KEYS = {
    "dev": "devices", "device": "devices", "bdf": "devices",
    "kind": "kinds", "k": "kinds",
    "sandbox": "sandboxes", "sb": "sandboxes",
    "pod": "pods",
    "ns": "namespaces", "namespace": "namespaces",
    "source": "sources", "src": "sources",
}
"""Filter prefixes and the term list each fills."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What the stream shows: `dev:BDF kind:KIND sandbox:ID pod:NAME ns:NAME source:NAME
    synthetic` + free words.

    Every term must match (AND; several values of one key: any of them); `dev:` also matches a
    PF's VFs when given the PF's BDF prefix; `pod:`/`ns:` match the event's own pod, its actor's
    or netns's, or the pod of the device or sandbox it is about.
    """

    devices: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    sandboxes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    synthetic_only: bool = False
    pods: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()

    @classmethod
    def parse(cls, query: str) -> EventFilter:
        terms: dict[str, list[str]] = {v: [] for v in set(FILTER_KEYS.values())}
        words: list[str] = []
        synthetic = False
        for tok in query.split():
            key, sep, val = tok.partition(":")
            field_name = FILTER_KEYS.get(key.lower())
            if sep and val and field_name:
                terms[field_name].append(val.lower())
            elif tok.lower() in ("synthetic", "synth"):
                synthetic = True
            else:
                words.append(tok.lower())
        return cls(devices=tuple(terms["devices"]), kinds=tuple(terms["kinds"]),
                   sandboxes=tuple(terms["sandboxes"]), sources=tuple(terms["sources"]),
                   words=tuple(words), synthetic_only=synthetic, pods=tuple(terms["pods"]),
                   namespaces=tuple(terms["namespaces"]))

    @property
    def empty(self) -> bool:
        return not (self.devices or self.kinds or self.sandboxes or self.sources or self.words
                    or self.synthetic_only or self.pods or self.namespaces)

    def describe(self) -> str:
        parts = [f"dev:{d}" for d in self.devices] + [f"kind:{k}" for k in self.kinds]
        parts += [f"sandbox:{s}" for s in self.sandboxes] + [f"pod:{p}" for p in self.pods]
        parts += [f"ns:{n}" for n in self.namespaces] + [f"source:{s}" for s in self.sources]
        parts += (["synthetic"] if self.synthetic_only else []) + list(self.words)
        return safe(" ".join(parts), 60)

    def matches(self, e: ev.Event, ctx: FilterContext | Mapping[str, str] | None = None) -> bool:
        """Whether `e` passes; `ctx` says who owns the devices and sandboxes now (a plain
        mapping is a BDF -> sandbox id map)."""
        if ctx is None:
            ctx = FilterContext()
        elif not isinstance(ctx, FilterContext):
            ctx = FilterContext(sandbox_of=ctx)
        if self.synthetic_only and not e.synthetic:
            return False
        if self.kinds and not any(k in e.kind for k in self.kinds):
            return False
        if self.sources and e.source.lower() not in self.sources:
            return False
        bdf = event_bdf(e)
        if self.devices:
            if bdf is None:
                ifname = getattr(e, "ifname", None)
                if not (isinstance(ifname, str) and ifname.lower() in self.devices):
                    return False
            elif not any(bdf.lower().endswith(d) or bdf.lower().startswith(d) for d in self.devices):
                return False
        sid = event_sandbox(e) or (ctx.sandbox_of.get(bdf) if bdf else None) or ""
        if self.sandboxes:
            pod = getattr(e, "pod", None) or ""
            if not any(s in sid.lower() or (pod and s in str(pod).lower()) for s in self.sandboxes):
                return False
        if self.pods or self.namespaces:
            pod, ns = event_pod(e)
            if pod is None:
                pod, ns = ctx.pod_of.get(bdf or "") or ctx.pod_of.get(sid) or (None, None)
            if self.pods and not (pod and any(p == pod.lower() or p in pod.lower() for p in self.pods)):
                return False
            if self.namespaces and not (ns and ns.lower() in self.namespaces):
                return False
        if self.words:
            hay = (render.stream(e) + " " + e.kind + " " + e.source).lower()
            if not all(w in hay for w in self.words):
                return False
        return True


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------


def finding_counts(state: HostState) -> tuple[int, int, dict[ev.Severity, int]]:
    """(ongoing, resolved, ongoing by severity)."""
    by_sev: dict[ev.Severity, int] = {}
    ongoing = resolved = 0
    for f in state.findings:
        if f.active:
            ongoing += 1
            by_sev[f.severity] = by_sev.get(f.severity, 0) + 1
        else:
            resolved += 1
    return ongoing, resolved, by_sev


def findings_title(state: HostState) -> Text:
    ongoing, resolved, by_sev = finding_counts(state)
    out = Text("Findings ", style="bold")
    out.append(f"{ongoing} ongoing")
    for sev in sorted(by_sev, reverse=True):
        out.append(" · ")
        out.append(f"{by_sev[sev]} {sev.label}", style=SEVERITY_STYLE[sev])
    out.append(f" · {resolved} resolved", style="dim")
    return out


def summary_without_device(f: ev.Finding) -> str:
    """The summary without its leading BDF when the Device column already shows it."""
    if f.bdf and f.summary.startswith(f.bdf):
        return f.summary[len(f.bdf):].lstrip(" :")
    return f.summary


def finding_where(f: ev.Finding, limit: int = 40) -> Text:
    out = Text()
    if f.bdf:
        out.append(f.bdf)
    if f.netdev:
        out.append(" " + safe(f.netdev, 16))
    if f.pod:
        out.append(" pod " + safe(f.pod, limit), style="magenta")
    elif f.sandbox_id:
        out.append(" sandbox " + safe(f.sandbox_id, 16), style="magenta")
    return out
