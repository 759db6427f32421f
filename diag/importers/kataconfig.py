"""Provides the importer of Kata configuration files (configuration*.toml and their config.d drop-ins).

Parsing, drop-in merging and Kata's own validation are the Kata source's (`diag.sources.kata.
config`), so a postmortem sees the effective `cold_plug_vfio` exactly as the live agent would.
Given several files, `group_configs` puts every drop-in (a file in a `config.d` directory) after
the main file of the directory above it, in name order, as Kata does; a drop-in with no main
file among the inputs is applied to Kata's built-in defaults. Each group gives one
`KataConfigLoaded` (and a `KataConfigInvalid` per error Kata would report); they have no time
of their own (a `static` input) and are placed at the start of the timeline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

from diag import events as ev
from diag.importers import FileStats, Parsed, register
from diag.sources.kata import effective

SOURCE = "kata"
_SECTION = re.compile(
    r"^\s*\[(?:hypervisor\.[\w-]+|runtime|agent\.[\w-]+|factory|image)\]\s*(?:#.*)?$"
)
_KEY = re.compile(r"^\s*(?:cold_plug_vfio|hot_plug_vfio|pcie_root_port|pcie_switch_port|"
                  r"enable_annotations|hotplug_vfio_on_root_bus|vfio_mode|dan_conf|"
                  r"sandbox_cgroup_only|machine_type)\s*=")
_ASSIGN = re.compile(r"^\s*[A-Za-z_][\w.-]*\s*=\s*\S")
_RUNTIME_KEYS = ("vfio_mode", "dan_conf", "sandbox_cgroup_only", "enable_debug",
                 "internetworking_model", "disable_guest_seccomp")


def fragment_text(text: str) -> tuple[str, list[str]]:
    """A pasted part of a configuration made loadable: the command line above it and other
    non-TOML lines dropped, and, when no [section] is given, its keys put where Kata reads them
    (runtime keys in [runtime], the others in [hypervisor.qemu]). Returns (text, notes)."""
    lines = text.splitlines()
    if any(_SECTION.match(x) for x in lines):
        return text, []
    notes: list[str] = []
    kept: dict[str, list[str]] = {"hypervisor.qemu": [], "runtime": []}
    dropped = 0
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if not _ASSIGN.match(line):
            dropped += 1
            continue
        key = s.split("=", 1)[0].strip()
        kept["runtime" if key in _RUNTIME_KEYS else "hypervisor.qemu"].append(s)
    if dropped:
        notes.append(f"{dropped} line(s) that are not configuration (a command, prose) skipped")
    notes.append("a fragment with no [section]: its keys read as those of [hypervisor.qemu] "
                 "and [runtime]; every other key is Kata's default")
    body = "".join(f"[{sec}]\n" + "\n".join(v) + "\n" for sec, v in kept.items() if v)
    return body, notes


def is_dropin(path: str) -> bool:
    return os.path.basename(os.path.dirname(os.path.abspath(path))) == "config.d"


def handler_name(main_path: str | None) -> str:
    """`configuration-qemu.toml` -> `kata-qemu`; `configuration.toml` (or none) -> `default`."""
    if main_path is None:
        return "default"
    stem = os.path.basename(main_path).removesuffix(".toml")
    if stem.startswith("configuration-"):
        return "kata-" + stem[len("configuration-"):]
    return "default"


def group_configs(paths: Sequence[str]) -> list[tuple[str | None, list[str]]]:
    """(main file or None, its drop-ins in Kata's order) for a set of configuration files."""
    mains = sorted(p for p in paths if not is_dropin(p))
    drops = sorted((p for p in paths if is_dropin(p)),
                   key=lambda p: (os.path.dirname(p), os.path.basename(p)))
    groups: dict[str | None, list[str]] = {m: [] for m in mains}
    for d in drops:
        parent = os.path.dirname(os.path.dirname(os.path.abspath(d)))
        owners = [m for m in mains if os.path.dirname(os.path.abspath(m)) == parent]
        owner = owners[0] if len(owners) == 1 else (mains[0] if len(mains) == 1 else None)
        groups.setdefault(owner, []).append(d)
    return list(groups.items())


def parse_group(
    main: tuple[str, str] | None, dropins: Iterable[tuple[str, str]], *,
    handler: str | None = None,
) -> list[ev.Event]:
    """Events (stamp 0: static) for a main file and its drop-ins, each given as (path, text).

    Through the Kata source's `config_from_texts`: a file Kata could not parse makes the whole
    configuration fail to load, as in Kata (only the error is reported then).
    """
    name = handler or handler_name(main[0] if main else None)
    main_path, main_text = main if main is not None else ("", "")
    cfg, errors = effective.config_from_texts(main_path, main_text, list(dropins), handler=name)
    events: list[ev.Event] = []
    if cfg is not None:
        events.append(ev.KataConfigLoaded(ts_ns=0, source=SOURCE, config=cfg))
    events.extend(e.event(0, SOURCE) for e in errors)
    return events


class _KataConfigImporter:
    name = "kataconfig"
    description = "Kata configuration file (TOML, config.d drop-ins)"

    def sniff(self, head: list[str]) -> bool:
        text = [x for x in head[:400] if x.strip() and not x.lstrip().startswith("#")]
        if not text or text[0].lstrip().startswith("{"):
            return False
        if any(_SECTION.match(x) for x in text):
            return True
        # A fragment: mostly `key = value` lines, one of them a Kata key.
        keys = sum(bool(_ASSIGN.match(x)) for x in text)
        return any(_KEY.match(x) for x in text) and keys * 2 >= len(text)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        data = b"".join(lines)
        stats.lines = data.count(b"\n")
        text, notes = fragment_text(data.decode("utf-8", "replace"))
        for n in notes:
            stats.note(n)
        events = (parse_group(None, [(origin, text)]) if is_dropin(origin)
                  else parse_group((origin, text), []))
        stats.events = len(events)
        return Parsed(events=events, clock="static")


register(_KataConfigImporter())
