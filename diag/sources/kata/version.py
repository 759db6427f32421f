"""Provides Kata's version per runtime handler, from every source a host or a bug report has.

Never by running Kata. Two layers:

- Pure decoders of the texts operators paste or tools leave (tested on real text): `kata-runtime
  --version`, `containerd-shim-kata-v2 --version`, `kata-runtime kata-env` (TOML or `--json`;
  `[Meta] Version` is kata-env's format version, not Kata's), kata-deploy's `<prefix>/VERSION`
  (`git describe`), `kata-collect-data.sh` (its `script_version` line, and the report's
  "Running `kata-collect-data.sh` version" line), `dpkg -l` and `rpm -qa` listings, and the
  `version` field of a log line: the Go `kata-runtime` CLI logs `version=` with `commit=`;
  runtime-rs's `version` field is the logging crate's CARGO_PKG_VERSION (`0.1.0` in every release
  from 3.x to 4.1, src/libs/logging/src/lib.rs), not Kata's, and is refused as such.
- `handler_version`: for one handler's shim (containerd's runtime_path, else its binary found
  on PATH; symlinks and kata-deploy's wrapper scripts followed inside the root) it reads, in
  this order of trust, the binary's own VERSION (gobinary; exact with a symbol table, heuristic
  when stripped), the dpkg/rpm package owning the binary, kata-deploy's `<prefix>/VERSION`
  beside it, the collect script installed beside it, and a Kata-named package that does not own
  it. The first exact reading with a version wins (a stripped binary's heuristic, a package not
  owning the shim and a log line are not exact: they win only alone); every reading is kept
  and disagreements between release lines are said.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from diag.common.paths import HostPaths, OutsideRoot
from diag.core.kata_exposure import (
    NOT_IN_REPORT,
    HandlerFacts,
    KataVersion,
    VersionReading,
    parse_version,
    upstream_of_package_version,
)
from diag.sources.kata import gobinary, pkgdb
from diag.sources.kata.discovery import resolve
from diag.sources.kata.effective import RuntimeHandler

SHIM_NAME = "containerd-shim-kata-v2"
PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""containerd's usual PATH, where it finds `containerd-shim-<name>-<version>`."""
KATA_DEPLOY_BASE = "/opt/kata"
RS_INSTALL_MARK = "/runtime-rs/"
MAX_SCRIPT_BYTES = 256 << 10

# ---- pure decoders ---------------------------------------------------------------------------

_RUNTIME_VERSION = re.compile(r"^\s*kata-runtime\s*:\s*(\S+)\s*$", re.M)
_RUNTIME_COMMIT = re.compile(r"^\s*commit\s*:\s*([0-9a-f]{7,40}(?:-dirty)?)\s*$", re.M)
_SHIM_VERSION = re.compile(r"Kata Containers containerd shim(?: \((Golang|Rust)\))?: id: \"[^\"]*\", "
                           r"version: ([^,\s]+)(?:,\s*commit: (\S+))?")
_SCRIPT_VERSION = re.compile(r"script_version=\"([^\"(]+?)\s*(?:\(commit ([0-9a-f]*)(?:-dirty)?\))?\"")
_REPORT_VERSION = re.compile(r"Running `kata-collect-data\.sh` version `([^` (]+)(?: \(commit ([0-9a-f]*)[^)]*\))?`")
_DPKG_L = re.compile(r"^(?P<state>[uirhp][ncHUFWti])\s+(?P<name>\S+?)(?::\S+)?\s+(?P<version>\S+)\s+(?P<arch>\S+)")
_RPM_QA = re.compile(r"^(?P<name>[A-Za-z0-9_.+-]+?)-(?P<version>\d[^-]*)-(?P<release>[^-]+?)\.(?P<arch>x86_64|aarch64|"
                     r"s390x|ppc64le|noarch|i686|riscv64)$")
RUNTIME_PACKAGES = re.compile(r"^(kata-containers|kata-runtime|kata)$")


@dataclass(frozen=True, slots=True)
class TextVersion:
    """A version read from a text, with its commit and what the text was."""

    version: str
    commit: str = ""
    what: str = ""
    runtime: str = ""
    """`go`/`rs` when the text says (shim --version)."""


def parse_runtime_version(text: str) -> TextVersion | None:
    """`kata-runtime --version` (also the VERSION: block of its --help)."""
    m = _RUNTIME_VERSION.search(text)
    if m is None or parse_version(m.group(1)) is None:
        return None
    c = _RUNTIME_COMMIT.search(text, m.end())
    return TextVersion(m.group(1), c.group(1) if c else "", "kata-runtime --version", "go")


def parse_shim_version(text: str) -> TextVersion | None:
    """`containerd-shim-kata-v2 --version`, Go ("(Golang)") or runtime-rs ("(Rust)")."""
    m = _SHIM_VERSION.search(text)
    if m is None or parse_version(m.group(2)) is None:
        return None
    rt = {"Golang": "go", "Rust": "rs"}.get(m.group(1) or "", "")
    return TextVersion(m.group(2), m.group(3) or "", "containerd-shim-kata-v2 --version", rt)


def parse_kata_env(text: str) -> dict[str, Any] | None:
    """The fields of `kata-runtime kata-env` (TOML) or `kata-env --json` this agent uses.

    Keys: version, commit, runtime_path, config_path, cold_plug_vfio, hot_plug_vfio,
    pcie_root_port, machine_type, format (kata-env's own format version). None when the text
    is neither, or names no runtime version.
    """
    data: Mapping[str, Any]
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return None
    if not isinstance(data, Mapping):
        return None
    rt = data.get("Runtime") or {}
    ver = rt.get("Version") or {} if isinstance(rt, Mapping) else {}
    inner = ver.get("Version") if isinstance(ver, Mapping) else None
    sem = (inner or {}).get("Semver") if isinstance(inner, Mapping) else None
    if sem is None and isinstance(ver, Mapping):  # kata-env format 1.0.x before the nested table
        sem = ver.get("Semver")
    if not isinstance(sem, str) or parse_version(sem) is None:
        return None
    hyp = data.get("Hypervisor") or {}
    hyp = hyp if isinstance(hyp, Mapping) else {}
    commit = (inner or {}).get("Commit") if isinstance(inner, Mapping) else ver.get("Commit")
    cfg = rt.get("Config") if isinstance(rt, Mapping) else None
    meta = data.get("Meta") or {}
    return {
        "version": sem, "commit": commit or "",
        "runtime_path": rt.get("Path", "") if isinstance(rt, Mapping) else "",
        "config_path": cfg.get("Path", "") if isinstance(cfg, Mapping) else "",
        "cold_plug_vfio": hyp.get("ColdPlugVFIO"), "hot_plug_vfio": hyp.get("HotPlugVFIO"),
        "pcie_root_port": hyp.get("PCIeRootPort"), "machine_type": hyp.get("MachineType", ""),
        "format": meta.get("Version", "") if isinstance(meta, Mapping) else "",
    }


def parse_collect_version(text: str) -> TextVersion | None:
    """The version of a kata-collect-data.sh script, or of the report it printed."""
    for rx, what in ((_SCRIPT_VERSION, "kata-collect-data.sh script_version"),
                     (_REPORT_VERSION, "kata-collect-data.sh report")):
        m = rx.search(text)
        if m and parse_version(m.group(1).strip()) is not None:
            return TextVersion(m.group(1).strip(), m.group(2) or "", what)
    return None


def parse_deploy_version(text: str) -> TextVersion | None:
    """kata-deploy's `<prefix>/VERSION`: `git describe` of the release (`3.8.0`, `3.8.0-12-gabc`)."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return TextVersion(first, what="kata-deploy VERSION") if parse_version(first) else None


def parse_package_listing(text: str) -> list[tuple[str, str, str]]:
    """(manager, package, version) of the Kata runtime packages in `dpkg -l` or `rpm -qa` output."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        m = _DPKG_L.match(line)
        if m and m.group("state").startswith("i") and RUNTIME_PACKAGES.match(m.group("name")):
            out.append(("dpkg", m.group("name"), m.group("version")))
            continue
        r = _RPM_QA.match(line.replace(".x86 64", ".x86_64"))
        if r and RUNTIME_PACKAGES.match(r.group("name")):
            out.append(("rpm", r.group("name"), f"{r.group('version')}-{r.group('release')}"))
    return out


def version_from_log_fields(fields: Mapping[str, str]) -> VersionReading | None:
    """A version reading from one log line's fields (Go kata-runtime CLI), or None.

    runtime-rs lines carry `version` too, but it is its logging crate's version (0.1.0): a line
    naming `kata-runtime` with a version and no `commit` is refused, and says why.
    """
    v = fields.get("version") or fields.get("VERSION") or ""
    if not v:
        return None
    name = fields.get("name") or fields.get("NAME") or ""
    commit = fields.get("commit") or fields.get("COMMIT") or ""
    if v.startswith("0.") or (name == "kata-runtime" and not commit):
        return VersionReading(source="log", exact=False, detail=(
            f"log line version={v} (name={name or '?'}): a Rust crate's CARGO_PKG_VERSION (runtime-rs, "
            "kata-agent log it), not Kata's (ignored)"))
    if parse_version(v) is None:
        return None
    return VersionReading(source="log", version=v, exact=False,
                          detail=f"a {name or 'Kata'} log line (version={v}" + (f" commit={commit[:12]}" if commit else "")
                          + ")")


# ---- readers under the root ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShimBinary:
    """Where a handler's shim is and what it is."""

    wanted: str
    """What containerd runs: runtime_path or `containerd-shim-<name>-<v>`."""
    path: str = ""
    """The host path found (symlinks followed; a wrapper script's target); empty when none."""
    chain: tuple[str, ...] = ()
    """Every path on the way: PATH hit, links, a wrapper script."""
    runtime: str = ""
    """`rs` when the install path says runtime-rs, `go` when it says Go, empty when it cannot."""
    note: str = ""


def _script_target(paths: HostPaths, host_path: str) -> str:
    """The Kata shim a kata-deploy wrapper script execs (absolute path in the script), or ''."""
    try:
        head = paths.read_bytes(host_path, MAX_SCRIPT_BYTES, regular=True)
    except OSError:
        return ""
    if not head.startswith(b"#!"):
        return ""
    m = re.search(rb"(/[\w./-]*/containerd-shim-kata-v2)\b", head)
    return m.group(1).decode() if m else ""


def shim_candidates(wanted: str) -> list[str]:
    """Where containerd would find the shim `wanted` (an absolute runtime_path, else on PATH)."""
    if wanted.startswith("/"):
        return [wanted]
    return [f"{d}/{wanted}" for d in PATH_DIRS] + ([f"{KATA_DEPLOY_BASE}/bin/{wanted}"] if wanted == SHIM_NAME else [])


def find_shim(paths: HostPaths, handler: RuntimeHandler) -> ShimBinary:
    """The shim binary this handler runs, as containerd finds it, under the root."""
    wanted = handler.shim_binary or SHIM_NAME
    chain: list[str] = []
    found = ""
    for c in shim_candidates(wanted):
        r = resolve(paths, c)
        if r is not None and paths.is_file(r):
            chain.append(c)
            if r != c:
                chain.append(r)
            found = r
            break
    if not found:
        return ShimBinary(wanted, note=f"{wanted} not found" + ("" if wanted.startswith("/") else " on PATH"))
    target = _script_target(paths, found)
    if target:
        r = resolve(paths, target)
        if r is not None:
            chain.append(r)
            found = r
    runtime = "rs" if RS_INSTALL_MARK in found else ("go" if found.endswith(SHIM_NAME) else "")
    return ShimBinary(wanted, found, tuple(dict.fromkeys(chain)), runtime)


def _stat_key(paths: HostPaths, host_path: str) -> tuple[int, int, int, int] | None:
    try:
        st = paths.stat(host_path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class BinaryCache:
    """Build information per binary, re-read only when its inode, size or mtime changes."""

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[tuple[int, int, int, int] | None, gobinary.GoBuildInfo | str]] = {}
        self.reads = 0
        """Binaries read (parsed) so far: the tests see that an unchanged one is not read again."""
        self._texts: dict[str, tuple[tuple[int, int, int, int] | None, str | None]] = {}

    def text(self, paths: HostPaths, host_path: str, limit: int = MAX_SCRIPT_BYTES) -> str | None:
        """A small text file (VERSION, the collect script), read again only when its stat changed."""
        key = _stat_key(paths, host_path)
        hit = self._texts.get(host_path)
        if hit is not None and hit[0] == key:
            return hit[1]
        text = _read_text(paths, host_path, limit) if key is not None else None
        self._texts[host_path] = (key, text)
        return text

    def key(self, paths: HostPaths, host_path: str) -> tuple[int, int, int, int] | None:
        """What a change of the binary changes (device, inode, size, mtime); None when absent."""
        return _stat_key(paths, host_path)

    def read(self, paths: HostPaths, host_path: str) -> gobinary.GoBuildInfo | str:
        """GoBuildInfo, or why the file could not be read (opened through HostPaths: under
        --root a link leading outside is refused, a FIFO or device node never opened)."""
        key = _stat_key(paths, host_path)
        hit = self._by_path.get(host_path)
        if hit is not None and hit[0] == key and key is not None:
            return hit[1]
        self.reads += 1
        try:
            with paths.open_file(host_path) as fh:
                info: gobinary.GoBuildInfo | str = gobinary.read_fd(fh.fileno())
        except gobinary.NotElf as exc:
            info = str(exc)
        except OSError as exc:
            info = str(exc) if isinstance(exc, OutsideRoot) else (exc.strerror or str(exc))
        self._by_path[host_path] = (key, info)
        return info


@dataclass(frozen=True, slots=True)
class HandlerVersion:
    """The version of one handler's Kata, which source won, and every reading."""

    handler: str
    version: KataVersion | None
    winner: VersionReading | None
    readings: tuple[VersionReading, ...]
    shim: ShimBinary
    runtime: str = ""
    """Runtime as the binary shows it (`go` from Go build info, `rs` from the install path)."""
    disagreements: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()
    """Host paths whose change can change the readings (the shim and its links, VERSION, ...)."""


def _read_text(paths: HostPaths, host_path: str, limit: int = MAX_SCRIPT_BYTES) -> str | None:
    try:
        return paths.read_text(host_path, limit, regular=True)
    except OSError:
        return None


def _deploy_prefix(bin_path: str) -> str:
    """kata-deploy writes VERSION at the prefix of the first shim (`/opt/kata`)."""
    d = os.path.dirname(bin_path)  # .../bin
    prefix = os.path.dirname(d)
    if prefix.endswith("/runtime-rs"):
        prefix = os.path.dirname(prefix)
    return prefix


def handler_version(paths: HostPaths, handler: RuntimeHandler, *, packages: pkgdb.PackageScan | None = None,
                    cache: BinaryCache | None = None,
                    extra: Iterable[VersionReading] = ()) -> HandlerVersion:
    """Every version reading of one handler and the winner (see the module docstring for the order)."""
    cache = cache or BinaryCache()
    shim = find_shim(paths, handler)
    readings: list[VersionReading] = []
    watch: list[str] = [*shim.chain, shim.path] if shim.path else list(shim_candidates(shim.wanted))
    runtime = shim.runtime
    if not shim.path:
        readings.append(VersionReading(source="binary", detail=shim.note, exact=False))
    else:
        info = cache.read(paths, shim.path)
        if isinstance(info, str):
            readings.append(VersionReading(source="binary", detail=f"{shim.path}: {info}", exact=False))
        elif not info.is_go:
            readings.append(VersionReading(source="binary", exact=False, detail=(
                f"{shim.path}: no Go build information (runtime-rs is Rust)" if runtime == "rs"
                else f"{shim.path}: no Go build information")))
        else:
            runtime = "go" if info.is_kata else runtime
            if info.kata_version:
                heuristic = not info.kata_how.startswith("symbol")
                readings.append(VersionReading(
                    source="binary", version=info.kata_version, exact=not heuristic,
                    detail=f"{shim.path} ({info.kata_how}; {info.go_version})"))
            else:
                readings.append(VersionReading(source="binary", exact=False, detail=f"{shim.path}: " + (
                    "; ".join(info.notes) or "not Kata's Go runtime")))
    scan = packages if packages is not None else pkgdb.scan(paths, [p for p in (shim.path, *shim.chain) if p])
    owner = next((scan.owner(p) for p in (shim.path, *shim.chain) if p and scan.owner(p)), None)
    if owner is not None:
        readings.append(VersionReading(source=owner.manager, version=upstream_of_package_version(owner.version),
                                       detail=f"{owner.manager} {owner.name} {owner.version} ({owner.db}) owns "
                                              f"{shim.path}"))
    if shim.path:
        prefix = _deploy_prefix(shim.path)
        vf = f"{prefix}/VERSION"
        watch.append(vf)
        text = cache.text(paths, vf, 4096)
        tv = parse_deploy_version(text) if text else None
        if tv is not None:
            readings.append(VersionReading(source="kata-deploy", version=tv.version,
                                           detail=f"{vf} (kata-deploy, git describe {tv.version})"))
        script = f"{os.path.dirname(shim.path)}/kata-collect-data.sh"
        watch.append(script)
        text = cache.text(paths, script)
        cv = parse_collect_version(text) if text else None
        if cv is not None:
            readings.append(VersionReading(source="collect-script", version=cv.version,
                                           detail=f"{script} (script_version {cv.version}, installed beside the shim)"))
    readings.extend(extra)
    for p in scan.packages:
        if p is not owner and pkgdb.KATA_NAME.match(p.name):
            readings.append(VersionReading(source=p.manager, version=p.upstream, exact=False,
                                           detail=f"{p.manager} {p.name} {p.version} ({p.db}), which does not "
                                                  f"own {shim.path or shim.wanted}"))
    for note in scan.notes:
        readings.append(VersionReading(source="rpm", detail=note, exact=False))
    ranked = sorted((r for r in readings if r.version and parse_version(r.version)),
                    key=lambda r: (not r.exact, readings.index(r)))
    winner = ranked[0] if ranked else None
    version = parse_version(winner.version) if winner else None
    disagree = tuple(f"{r.detail} says {r.version}" for r in ranked[1:]
                     if version is not None and (parse_version(r.version) or version).line != version.line)
    return HandlerVersion(handler.name, version, winner, tuple(readings), shim, runtime, disagree,
                          tuple(dict.fromkeys(watch)))


# ---- postmortem: the facts a report gives ---------------------------------------------------

_TOML_BLOCK = re.compile(r"```toml\n(.*?)(?:\n```|\Z)", re.S)


def _kata_env_block(text: str) -> dict[str, Any]:
    """The TOML of kata-env in a collect-data report (or the text itself), leniently: {} when none."""
    for chunk in [m.group(1) for m in _TOML_BLOCK.finditer(text)] + [text]:
        try:
            data = tomllib.loads(chunk)
        except tomllib.TOMLDecodeError:
            continue
        if isinstance(data.get("Hypervisor"), Mapping) or isinstance(data.get("Runtime"), Mapping):
            return data
    return {}


def facts_from_report(text: str, *, handler: str = "kata", origin: str = "report") -> HandlerFacts | None:
    """A handler's facts from what an operator attached: kata-env, a collect-data report, a
    `--version` output. None when the text names no Kata version and no configuration."""
    env = parse_kata_env(text) or {}
    readings: list[VersionReading] = []
    if env.get("version"):
        readings.append(VersionReading(source="kata-env", version=env["version"],
                                       detail=f"{origin}: kata-env [Runtime.Version] {env['version']}"))
    for parse, src in ((parse_collect_version, "collect-data"), (parse_shim_version, "shim --version"),
                       (parse_runtime_version, "kata-runtime --version")):
        tv = parse(text)
        if tv is not None:
            readings.append(VersionReading(source=src, version=tv.version, detail=f"{origin}: {tv.what} {tv.version}"))
    for mgr, name, ver in parse_package_listing(text):
        readings.append(VersionReading(source=mgr, version=upstream_of_package_version(ver), exact=False,
                                       detail=f"{origin}: {mgr} listing {name} {ver}"))
    hyp = _kata_env_block(text).get("Hypervisor") or {}
    cold = hyp.get("ColdPlugVFIO") if isinstance(hyp, Mapping) else None
    if not readings and cold is None:
        return None
    winner = next((r for r in readings if r.exact), readings[0] if readings else None)
    shim = parse_shim_version(text)
    rs = (shim is not None and shim.runtime == "rs") or "/runtime-rs/" in str(env.get("config_path", ""))
    return HandlerFacts(
        handler=handler, runtime="rs" if rs else "go", runtime_basis=origin,
        version=str(parse_version(winner.version) or "") if winner else "", version_source=winner,
        readings=tuple(readings),
        config_path=env.get("config_path") or None,
        cold_plug_vfio=str(cold) if cold is not None else "no-port",
        cold_plug_origin=f"{origin}: kata-env ColdPlugVFIO" if cold is not None else NOT_IN_REPORT,
        hot_plug_vfio=str(hyp.get("HotPlugVFIO") or "no-port") if isinstance(hyp, Mapping) else "no-port",
        pcie_root_port=int(hyp.get("PCIeRootPort") or 0) if isinstance(hyp, Mapping) else 0,
        vfs_basis="the report names no VFs", vfs_known=False)
