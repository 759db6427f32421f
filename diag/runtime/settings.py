"""Provides load(): the agent's own settings (its TOML file plus driverctl's overrides), as AgentConfig.

Not to be confused with the core's thresholds (`diag.core.thresholds`, the `[core]` table parsed
purely) or with Kata's configuration (`diag.sources.kata`), which the agent watches.

The file has three tables: `[core]` (the rules' thresholds and allow-lists, validated by the
pure `diag.core.thresholds.parse`), `[sources.<name>]` (per-source options, handed to each source
as they are) and `[k8s]` (Kubernetes Events, diag.sinks.k8s_events). Every error names the
file, the line (tomllib's own message carries line and column for syntax errors; for a bad
value the key's line is looked up) and the key, with a fix.

driverctl keeps its persistent overrides as files `/etc/driverctl.d/<bus>-<bdf>` holding the
driver name; a `pci-<bdf>` file saying `vfio-pci` declares that binding intended, so it is read
(under `--root`) into CoreConfig.driverctl_overrides. That is I/O, so it lives here, not in core.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from diag.common import faults as faults_mod
from diag.common.errors import ConfigError
from diag.common.paths import HostPaths
from diag.common.tomldepth import too_deep
from diag.core import thresholds
from diag.core.thresholds import CoreConfig

TOP_LEVEL = ("core", "sources", "k8s", "faults")
DRIVERCTL_DIR = "/etc/driverctl.d"
_BDF = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_TABLE = re.compile(r"^\s*\[\s*([^\]\[]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]+"|'[^']+'|[A-Za-z0-9_-]+)\s*=""")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Everything the agent reads from its configuration file and from driverctl."""

    core: CoreConfig = field(default_factory=CoreConfig)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`[sources.<name>]` tables by source name, as parsed."""
    k8s: dict[str, Any] = field(default_factory=dict)
    """The `[k8s]` table (Kubernetes Events; checked by diag.sinks.k8s_events.parse_options)."""
    faults: faults_mod.Faults = faults_mod.NO_FAULTS
    """The `[faults]` table: fault injection, for tests only (diag.common.faults)."""
    path: str | None = None
    """The file it came from; None when defaults are used."""


def key_lines(text: str) -> dict[str, int]:
    """`table.key` (and `table`) -> 1-based line, for naming the line of a bad value.

    A small scan, not a TOML parser: enough for the flat tables this file uses."""
    out: dict[str, int] = {}
    table = ""
    for n, line in enumerate(text.splitlines(), 1):
        m = _TABLE.match(line)
        if m:
            table = m.group(1).replace(" ", "")
            out.setdefault(table, n)
            continue
        k = _KEY.match(line)
        if k:
            key = k.group(1).strip("\"'")
            out.setdefault(f"{table}.{key}" if table else key, n)
    return out


def read_driverctl(paths: HostPaths) -> tuple[str, ...]:
    """BDFs that driverctl persistently overrides to vfio-pci (`/etc/driverctl.d/pci-<bdf>`)."""
    try:
        names = sorted(paths.listdir(DRIVERCTL_DIR))
    except OSError:
        return ()
    out = []
    for name in names:
        bus, _, bdf = name.partition("-")
        if bus != "pci" or not _BDF.match(bdf):
            continue
        try:
            driver = paths.read_text(f"{DRIVERCTL_DIR}/{name}", 4096, regular=True).strip()
        except OSError:
            continue
        if driver == "vfio-pci":
            out.append(bdf.lower())
    return tuple(out)


def parse_text(text: str, path: str) -> AgentConfig:
    """Parse the configuration file's text (pure; `load` adds the file and driverctl)."""
    deep = too_deep(text)
    if deep is not None:  # tomllib recurses: bounded first
        raise ConfigError(f"{path}:{deep.line}: {deep.reason}",
                          hint="the agent's settings are [core], [sources.<name>] and [k8s] "
                               "tables of plain keys: remove the nesting")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}",
            hint="fix the syntax at that line and column (strings need quotes, tables [name])",
        ) from None
    lines = key_lines(text)
    for key in doc:
        if key not in TOP_LEVEL:
            where = f"{path}:{lines[key]}" if key in lines else path
            raise ConfigError(
                f"{where}: unknown table or key {key!r}",
                hint="the file has [core] (rule thresholds), [sources.<name>] and [k8s] tables "
                     "(and [faults], for tests)",
            )
    core = thresholds.parse(doc, path, lines)
    sources_doc = doc.get("sources", {})
    if not isinstance(sources_doc, dict):
        where = f"{path}:{lines['sources']}" if "sources" in lines else path
        raise ConfigError(f"{where}: sources must be a table of [sources.<name>] tables",
                          hint="for example [sources.uevent] then rcvbuf = 4194304")
    sources: dict[str, dict[str, Any]] = {}
    for name, table in sources_doc.items():
        if not isinstance(table, dict):
            key = f"sources.{name}"
            where = f"{path}:{lines[key]}" if key in lines else path
            raise ConfigError(f"{where}: {key} must be a table, got {table!r}",
                              hint=f"write it as [sources.{name}] with its options below")
        sources[name] = dict(table)
    k8s = doc.get("k8s", {})
    if not isinstance(k8s, dict):
        where = f"{path}:{lines['k8s']}" if "k8s" in lines else path
        raise ConfigError(f"{where}: k8s must be a table", hint="write it as [k8s] then events = true")
    from diag.sinks.k8s_events import parse_options

    parse_options(k8s, path, lines)  # errors name the file, line and key now, not at start
    faults_doc = doc.get("faults", {})
    if not isinstance(faults_doc, dict):
        where = f"{path}:{lines['faults']}" if "faults" in lines else path
        raise ConfigError(f"{where}: faults must be a table", hint=faults_mod.HINT)
    faults = faults_mod.parse(faults_doc, path, lines)
    return AgentConfig(core=core, sources=sources, k8s=dict(k8s), faults=faults, path=path)


def load(path: str | Path | None, *, root: str | Path = "/", paths: HostPaths | None = None) -> AgentConfig:
    """Read the configuration file (None: defaults) and driverctl's overrides under `root`
    (or `paths`, whose refusals the caller then reports).

    Raises ConfigError naming the file, line and key, with a hint, for anything wrong.
    """
    if path is None:
        cfg = AgentConfig()
    else:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(
                f"{p}: cannot read the configuration file: {exc.strerror or exc}",
                hint="pass --config a readable TOML file, or leave it out to use the defaults",
            ) from None
        cfg = parse_text(text, str(p))
    overrides = read_driverctl(paths or HostPaths.at(root))
    if overrides:
        merged = tuple(dict.fromkeys((*cfg.core.driverctl_overrides, *overrides)))
        cfg = replace(cfg, core=replace(cfg.core, driverctl_overrides=merged))
    return cfg
