"""Provides the postmortem's inputs: what the user asked for (Options) and each file, sniffed and read.

Every file (directories expanded) is recognised by content and parsed by its importer into the
events the live sources emit; Kata's configuration files are merged per main file + config.d
and its state files read with them; the agent's own journals stay lazy (streamed by the
replay) and their rotated parts are put in order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from diag import events as ev
from diag.core.thresholds import CoreConfig
from diag.importers import FileStats, Importer, Parsed, iter_lines, read_whole, sniff, walk


@dataclass(frozen=True, slots=True)
class Alignment:
    """How one input was put on the common clock."""

    offset_ns: int
    """Added to the input's stamps."""
    uncertainty_ns: int | None
    """None: not aligned at all (order against other inputs unknown)."""
    method: str
    """One sentence for the report."""
    support: int = 0


@dataclass(slots=True)
class Options:
    """What the user asked for."""

    device: str | None = None
    """A full PCI address (the command normalises `01:10.0` and refuses what is not one)."""
    sandbox: str | None = None
    pod: str | None = None
    namespace: str | None = None
    """The Kubernetes pod and namespace: their sandboxes and devices."""
    since_ns: int | None = None
    until_ns: int | None = None
    since_text: str | None = None
    until_text: str | None = None
    """A time relative to the inputs (`16:07:58`, `+90`), resolved by the replay against the
    first stamp into since_ns / until_ns."""
    offsets: dict[str, int] = field(default_factory=dict)
    """Path (or `*` for every input without wall-clock time) -> seconds-to-wall offset in ns."""
    timeline_limit: int = 2000
    config: CoreConfig | None = None
    include_ticks: bool = False
    keep_resolved: int = 1000
    """Resolved findings kept for the report (memory stays bounded); totals count them all."""


@dataclass(slots=True)
class Input:
    """One input file and how it was read and placed."""

    index: int
    path: str
    stats: FileStats
    importer: Importer | None = None
    parsed: Parsed | None = None
    events: list[ev.Event] | None = None
    """Materialised events (every input but the agent's journal)."""
    alignment: Alignment | None = None
    uncertainties: list[int] | None = None
    """Per-event uncertainty for untimed inputs placed by matching (-1: unknown)."""
    at: str | None = None
    """When a state listing was taken, as the user said it (`PATH@end`, `PATH@TIME`)."""
    at_ns: int | None = None
    """That moment on the common clock (set by the command for a time, by the replay for
    `end`); None: the listing has no time."""

    @property
    def format(self) -> str:
        return self.stats.format

    @property
    def clock(self) -> str:
        return self.stats.clock



def open_inputs(paths: Iterable[str], options: Options) -> list[Input]:
    """Sniff and parse every file (directories expanded); the agent's journals stay lazy.

    An input named `PATH@WHEN` (and not itself a file) is PATH, taken at WHEN (`end` or a
    time): a state listing whose drivers are the state at that moment."""
    named, at_of = split_at(paths)
    inputs: list[Input] = []
    seen: dict[str, str] = {}
    for path in walk(named):
        inputs.append(_open(len(inputs), path, seen, at_of.get(path)))
    _order_journal_parts(inputs)
    configs = _kata_pass(inputs)
    for inp in inputs:
        if inp.importer is not None and inp.parsed is None:
            _parse(inp)
    _collect_facts(inputs)
    _kata_facts(inputs, configs)
    return inputs


def split_at(paths: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """The paths as given, `PATH@WHEN` cut to PATH (when PATH exists and the whole does not);
    with PATH -> WHEN."""
    named: list[str] = []
    at_of: dict[str, str] = {}
    for item in paths:
        base, sep, when = item.rpartition("@")
        if sep and not os.path.exists(item) and os.path.exists(base):
            at_of[base] = when  # `lspci-after.txt@end`: when the listing was taken
            item = base
        named.append(item)
    return named, at_of


def _open(index: int, path: str, seen: dict[str, str], at: str | None) -> Input:
    """One file sniffed (not parsed yet): a repeat, not a regular file, empty, unreadable,
    unrecognised, or its importer."""
    st = FileStats(path)
    real = os.path.realpath(path)
    if real in seen:  # a symlink (configuration.toml -> configuration-qemu.toml) or repeat
        st.format = "duplicate"
        st.note(f"the same file as {seen[real]}: read once")
        return Input(index=index, path=path, stats=st)
    seen[real] = path
    copy_of = crash_leftover_of(path)
    if copy_of is not None:
        st.format = "duplicate"
        st.note(f"an unfinished compressed copy of {copy_of} (the agent stopped while it "
                f"compressed that part): {copy_of} is read instead")
        return Input(index=index, path=path, stats=st)
    if os.path.exists(path) and not os.path.isfile(path):
        # A FIFO, socket or device: reading it twice (sniff, then parse) would block or
        # lose data.
        st.format, st.error = "unreadable", "not a regular file"
        return Input(index=index, path=path, stats=st)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        st.format = "empty"
        st.note("empty: nothing was captured")
        return Input(index=index, path=path, stats=st)
    imp, err = sniff(path)
    inp = Input(index=index, path=path, stats=st, importer=imp, at=at)
    if err:
        st.format, st.error = "unreadable", err
    elif imp is None:
        st.format = "unrecognised"
    else:
        st.format = imp.name
    return inp


_PART = re.compile(r"\.\d{6}$")
"""A rotated journal part's suffix (`journal.jsonl.000003`)."""


def crash_leftover_of(path: str) -> str | None:
    """The complete file a crash leftover beside it copies, or None. The journal compresses a
    part `P` into `P.gz.tmp`, renames that to `P.gz`, then deletes `P`: a crash leaves
    `P.gz.tmp` (cut) beside `P`, or `P.gz` beside `P`. Either copy would be read as one more
    part (every event twice): `P` is complete in both cases, and the copy is skipped."""
    if path.endswith(".gz.tmp"):
        base = path[: -len(".gz.tmp")]
        for full in (base, base + ".gz"):
            if os.path.isfile(full):
                return full
        return None
    if path.endswith(".gz") and _PART.search(path[:-3]) and os.path.isfile(path[:-3]):
        return path[:-3]
    return None


def _parse(inp: Input) -> None:
    """Parse one input whole with its importer (the agent's journal: lazily), its events in
    stamp order; lines without a time of their own keep their place, marked time unknown."""
    from diag.importers import journal as jmod

    assert inp.importer is not None
    st = inp.stats
    if inp.format == "journal":
        inp.parsed = jmod.parse_file(inp.path, st, skip_restatement=st.notes.count(_CONTINUES) > 0)
        st.clock = "realtime"
        return
    parsed = inp.importer.parse(iter_lines(inp.path, st), st, inp.path)
    events = list(parsed.events)
    if parsed.untimed and len(parsed.untimed) == len(events) and any(parsed.untimed):
        pairs = sorted(zip(events, parsed.untimed, strict=True), key=lambda p: p[0].ts_ns)
        events = [e for e, _ in pairs]
        inp.uncertainties = [-1 if u else 0 for _, u in pairs]
    else:
        events.sort(key=lambda e: e.ts_ns)  # stable; linear when already in order
    inp.parsed, inp.events = parsed, events
    st.clock = parsed.clock if inp.format != "ipmon" else st.clock


_CONTINUES = "continues an earlier part given here: its restated state was skipped"


def _read_text(inp: Input, what: str) -> str | None:
    """The whole file's text; None (the input refused, said why) past MAX_WHOLE_FILE."""
    data = read_whole(iter_lines(inp.path, inp.stats), inp.stats, what)
    if data is None:
        _set_static(inp, [])
        return None
    inp.stats.lines = data.count(b"\n")
    return data.decode("utf-8", "replace")


def _config_text(inp: Input) -> str | None:
    """A configuration file's text; a pasted fragment made loadable (and said so)."""
    from diag.importers import kataconfig

    raw = _read_text(inp, "a Kata configuration file")
    if raw is None:
        return None
    text, notes = kataconfig.fragment_text(raw)
    for n in notes:
        inp.stats.note(n)
    return text


def _kata_pass(inputs: list[Input]) -> list[ev.KataConfig]:
    """Kata configuration files merged per main file + config.d; state files read with them."""
    configs = _kata_configs({i.path: i for i in inputs if i.format == "kataconfig"})
    _kata_states([i for i in inputs if i.format == "katastate"], configs)
    return configs


COLLECT_REPORT = "kata-collect-data"
MAX_REPORT = 4 << 20


def _collect_facts(inputs: list[Input]) -> None:
    """A kata-collect-data.sh report embeds kata-env and its own version line: the handler's facts
    they give become an input of their own, `<report>#kata-env`, a state listing judged like a
    pasted kata-env (the report's journal lines keep their own clock in the report's input)."""
    from diag.importers import IMPORTERS, kataversion

    for inp in [i for i in inputs if i.format == COLLECT_REPORT]:
        parts, size = [], 0
        for line in iter_lines(inp.path, FileStats(inp.path)):
            if size >= MAX_REPORT:
                break
            parts.append(line)
            size += len(line)
        e = kataversion.facts_event(b"".join(parts).decode("utf-8", "replace"), inp.path)
        if e is None:
            continue
        st = FileStats(f"{inp.path}#kata-env", format=kataversion.NAME, clock="static", events=1,
                       lines=inp.stats.lines)
        f = e.facts
        st.note(f"the Kata version and configuration the report's kata-env gives: Kata "
                f"{f.version or 'version unknown'}"
                + (f" ({f.version_source.detail})" if f.version_source else ""))
        inputs.append(Input(index=len(inputs), path=st.path, stats=st,
                            importer=IMPORTERS.get(kataversion.NAME),
                            parsed=Parsed(events=[e], clock="static"), events=[e]))


def _kata_facts(inputs: list[Input], configs: list[ev.KataConfig]) -> None:
    """A Kata version given as text (kata-env, `--version`, a package listing) is judged with the
    configuration files and the inventory (lspci, a snapshot) given beside it: each facts event
    that shows no configuration takes each configuration given (Kata's default no-port when
    none), and facts that name no VFs take the inventory's (unknown when none is given)."""
    from diag.core import kata_exposure as kx
    from diag.sources.kata import effective
    from diag.sources.kata.exposure import vf_facts

    holders = [i for i in inputs if i.format != "journal" and i.events
               and any(isinstance(e, ev.KataFactsObserved) for e in i.events)]
    if not holders:
        return
    devices: dict[str, ev.PciDevice] = {}
    for i in inputs:
        for e in i.events or () if i.format != "journal" else ():
            if isinstance(e, ev.InventoryObserved):
                devices.update((d.bdf, d) for d in e.devices)
    vfs = vf_facts([devices[b] for b in sorted(devices)], []) if devices else None
    for i in holders:
        out: list[ev.Event] = []
        for e in i.events or ():
            if not isinstance(e, ev.KataFactsObserved) or e.gone:
                out.append(e)
                continue
            facts = [e.facts]
            if e.facts.cold_plug_origin == kx.NOT_IN_REPORT and configs:
                facts = [kx.with_config(e.facts, c, annotation_enabled=effective.annotation_enabled(
                    c.enable_annotations, effective.ANN_COLD)) for c in configs]
                i.stats.note("judged with the Kata configuration given: "
                             + ", ".join(c.path or c.handler for c in configs))
            elif e.facts.cold_plug_origin == kx.NOT_IN_REPORT:
                i.stats.note("no Kata configuration among the inputs: Kata's default "
                             "cold_plug_vfio = no-port assumed")
            if not e.facts.vfs_known:
                if vfs is not None:
                    facts = [kx.with_vfs(f, *vfs) for f in facts]
                else:
                    i.stats.note("no inventory among the inputs (lspci, a snapshot): judged as if "
                                 "a VF could be given to pods")
            out.extend(ev.replace(e, facts=f) for f in facts)
        i.events = out
        i.parsed = Parsed(events=out, clock="static")
        i.stats.events = len(out)


def _kata_configs(every: dict[str, Input]) -> list[ev.KataConfig]:
    """Each main file with its config.d drop-ins as one handler's effective configuration."""
    from diag.importers import kataconfig

    read = {p: _config_text(i) for p, i in every.items()}
    texts = {p: t for p, t in read.items() if t is not None}  # a refused file merges nothing
    confs = {p: every[p] for p in texts}
    configs: list[ev.KataConfig] = []
    for main, drops in kataconfig.group_configs(list(confs)):
        events = kataconfig.parse_group((main, texts[main]) if main else None,
                                        [(d, texts[d]) for d in drops])
        owner = confs[main] if main else confs[drops[0]]
        owner.events = events
        owner.stats.events = len(events)
        for d in drops:
            if confs[d] is not owner:
                confs[d].events = []
                confs[d].stats.note(f"drop-in merged into {main or drops[0]}")
        configs.extend(e.config for e in events if isinstance(e, ev.KataConfigLoaded))
    for i in confs.values():
        i.parsed = Parsed(events=i.events or [], clock="static")
        i.stats.clock = "static"
    names = [c.handler for c in configs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        paths = [c.path for c in configs if c.handler == name]
        for i in confs.values():
            if i.path in paths:
                i.stats.note(f"{len(paths)} configurations for handler {name} were given; the "
                             f"last one read ({paths[-1]}) is the one replayed")
    return configs


def _kata_states(states: list[Input], configs: list[ev.KataConfig]) -> None:
    """Sandbox state files (persist.json, state.json), each read with its sandbox's bundle and
    the one configuration given (Kata's defaults when several or none)."""
    from diag.importers import katastate
    from diag.sources.kata import decode as kata_decode

    cfg = configs[0] if len(configs) == 1 else None
    read = {i.path: _read_text(i, "a Kata state file") for i in states}
    texts = {p: t for p, t in read.items() if t is not None}
    states = [i for i in states if i.path in texts]
    bundles: dict[str, tuple[Input, kata_decode.BundleInfo]] = {}
    for i in states:
        if katastate.is_bundle(texts[i.path]):
            b = katastate.parse_bundle(texts[i.path], i.path, i.stats)
            # Only the sandbox (pause) task's bundle describes the sandbox; a container's is noted.
            if b is not None and b.container_type in ("sandbox", ""):
                bundles[b.sandbox_id or os.path.basename(os.path.dirname(i.path))] = (i, b)
            elif b is not None:
                i.stats.note("a container's bundle: the sandbox's own bundle carries the pod")
            i.events, i.parsed, i.stats.clock = [], Parsed(events=[], clock="static"), "static"
    used: set[str] = set()
    for i in states:
        if katastate.is_bundle(texts[i.path]):
            continue
        sid = katastate.sandbox_id(i.path, texts[i.path])
        pair = bundles.get(sid)
        if pair is not None:
            used.add(sid)
            pair[0].stats.note(f"read with {i.path}")
        events = katastate.parse_state(texts[i.path], i.path, cfg, i.stats,
                                       pair[1] if pair else None)
        _set_static(i, events)
    for sid, (i, b) in bundles.items():
        if sid not in used:
            _set_static(i, katastate.parse_state(None, i.path, cfg, i.stats, b))
    if len(configs) > 1:
        for i in states:
            i.stats.note(f"{len(configs)} Kata configurations given: which one this sandbox used "
                         "is unknown; Kata's defaults assumed")


def _set_static(i: Input, events: list[ev.Event]) -> None:
    i.events = events
    i.stats.events = len(events)
    i.parsed = Parsed(events=events, clock="static")
    i.stats.clock = "static"


def _order_journal_parts(inputs: list[Input]) -> None:
    """Mark rotated journal parts that follow an earlier part of the same run among the inputs."""
    from diag.importers import journal as jmod

    runs: dict[tuple[str, int], list[tuple[int, Input]]] = {}
    for inp in inputs:
        if inp.format != "journal":
            continue
        h = jmod.first_header(inp.path)
        if h is None:
            continue
        who = ", ".join(x for x in (
            f"host {h.hostname}" if h.hostname else "", f"kernel {h.kernel}" if h.kernel else "",
            f"vfiowatch {h.agent_version}" if h.agent_version else "",
            f"boot {h.boot_id[:8]}" if h.boot_id else "", f"part {h.part}") if x)
        inp.stats.note(f"written by the agent: {who}")
        runs.setdefault((h.boot_id, h.started_ns), []).append((h.part, inp))
    for parts in runs.values():
        parts.sort(key=lambda x: x[0])
        for _, inp in parts[1:]:
            inp.stats.note(_CONTINUES)

