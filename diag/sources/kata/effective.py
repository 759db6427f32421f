"""Provides Kata's configuration, pure: TOML parse, drop-in merge, Kata's validation, annotations.

No I/O (tested on strings): `parse_toml`, `parse_layer`, `merge_layers`, `effective_config`,
`config_from_texts`, `check_pcie_config`, `handlers_from_containerd`, `apply_annotations`,
`find_key_line`, `go_quote`, and Kata's constants and error texts. The postmortem importer runs
them on copied files; `diag.sources.kata.discovery` finds and reads the host's files and hands
their texts here.

The effective settings follow Kata exactly (kata-facts §1): the main file is merged with every
entry of `config.d/` beside it, in file-name order, each overriding what came before; type
errors are the ones Kata's TOML decoder reports, and `checkPCIeConfig`, vfio_mode and
runtime-rs's port rule are Kata's own checks with its own texts.

API for importers:
    from diag.sources.kata import effective
    cfg, errors = effective.config_from_texts("/etc/kata-containers/configuration.toml", text,
                                              [("/etc/kata-containers/config.d/10.toml", dropin)])
    settings = effective.apply_annotations(cfg, pod_annotations)   # a sandbox's effective values
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diag import events as ev
from diag.common.tomldepth import too_deep

# ---- Kata's constants (kata-facts §1) -------------------------------------------------------

GO_SYSCONF_PATH = "/etc/kata-containers/configuration.toml"
GO_SHARE_PATHS = (
    "/usr/share/defaults/kata-containers/configuration.toml",
    "/opt/kata/share/defaults/kata-containers/configuration.toml",
)
"""`<PREFIX>/share/defaults/...` for PREFIX=/usr (make) and PREFIX=/opt/kata (kata-deploy)."""
RS_DEFAULT_PATHS = (
    "/etc/kata-containers/runtime-rs/configuration.toml",
    "/usr/share/defaults/kata-containers/runtime-rs/configuration.toml",
    "/opt/kata/share/defaults/kata-containers/runtime-rs/configuration.toml",
)
CONTAINERD_CONFIGS = (
    "/etc/containerd/config.toml",
    "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
    "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
)
CRI_RUNTIME_TABLES = (
    ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"),  # containerd 2.x (v3)
    ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"),  # containerd 1.x (v2)
    ("plugins", "cri", "containerd", "runtimes"),  # containerd 1.x, config version 1
)
NO_PORT, BRIDGE_PORT, ROOT_PORT, SWITCH_PORT = "no-port", "bridge-port", "root-port", "switch-port"
PORTS = (NO_PORT, BRIDGE_PORT, ROOT_PORT, SWITCH_PORT)
MAX_PCIE_PORTS = 16
"""`maxPCIeRootPorts` / `maxPCIeSwitchPorts`: Go caps the TOML value here."""
UINT32_MAX = 2**32 - 1
GO_HYPERVISORS = ("qemu", "clh", "firecracker", "dragonball", "stratovirt", "remote")
DEFAULT_MACHINE_TYPE = "q35"
VFIO_MODES = ("vfio", "guest-kernel")
VFIO_KEYS = ("cold_plug_vfio", "hot_plug_vfio", "pcie_root_port", "pcie_switch_port")

ANNOTATION_PREFIX = "io.katacontainers.config.hypervisor."
ANN_COLD = ANNOTATION_PREFIX + "cold_plug_vfio"
ANN_HOT = ANNOTATION_PREFIX + "hot_plug_vfio"
ANN_ROOT_PORT = ANNOTATION_PREFIX + "pcie_root_port"
ANN_SWITCH_PORT = ANNOTATION_PREFIX + "pcie_switch_port"

ERR_KATA_CONF_FILE = 'invalid KATA_CONF_FILE {}: only shipped Kata configuration files are accepted'
ERR_BOTH_SET = "invalid hot-plug={} and cold-plug={} settings, only one of them can be set"
ERR_VFIO_PORT = "invalid vfio_port={} setting, allowed values no-port, bridge-port, root-port, switch-port"
ERR_CLH_COLD = "only cold-plug=no-port or root-port supported on CLH"
ERR_CLH_HOT = "only hot-plug=no-port or root-port supported on CLH"
ERR_NOT_ENABLED = "annotation {} is not enabled"
ERR_ANN_PORT = 'Invalid PCIe port "{}" specified in annotation'
ERR_ANN_UINT = "Error parsing annotation for {}: Please specify positive numeric value"
ERR_RS_ROOT_SWITCH = "Root Port and Switch Port set at the same time is forbidden."
ERR_GO_VFIO_MODE = "Unknown VFIO mode {}"
ERR_RS_VFIO_MODE = "Invalid vfio_mode `{}` in configuration file"
ERR_TOO_MANY_ROOT = "Number of PCIe Root Ports exceeed allowed max of 16"
ERR_TOO_MANY_SWITCH = "Number of PCIe Switch Ports exceeed allowed max of 16"
ERR_INVALID_HYPERVISOR = "configuration file contains invalid hypervisor section"

MAX_FILE_BYTES = 4 << 20
"""Refuse to parse a configuration file larger than this (a Kata TOML is ~30 KiB)."""


# ---- Parse and merge -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigError:
    """A configuration Kata would reject (or that the agent could not read), with its position."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None
    key: str | None = None
    handler: str | None = None
    sandbox_id: str | None = None

    def event(self, ts_ns: int, source: str = "kata") -> ev.KataConfigInvalid:
        return ev.KataConfigInvalid(
            ts_ns=ts_ns, source=source, path=self.path, message=self.message,
            handler=self.handler, line=self.line, column=self.column, key=self.key,
            sandbox_id=self.sandbox_id,
        )

    def where(self) -> str:
        pos = f":{self.line}" if self.line else ""
        pos += f":{self.column}" if self.line and self.column else ""
        return f"{self.path}{pos}"


@dataclass(frozen=True, slots=True)
class Layer:
    """One parsed TOML file: the main configuration or a drop-in."""

    path: str
    """Host path (as Kata names it, without --root)."""
    kind: str
    """`file` or `drop-in`."""
    text: str
    data: dict[str, Any]


_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)|\(at end of document\)")


def go_quote(s: str) -> str:
    """Go's `%q` for the strings Kata quotes (paths): escapes quotes, backslashes, controls."""
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def parse_toml(text: str, path: str) -> tuple[dict[str, Any] | None, ConfigError | None]:
    """Parse TOML; on failure a ConfigError naming the file, line and column. A text nesting
    deeper than MAX_TOML_DEPTH is refused before parsing (tomllib recurses)."""
    deep = too_deep(text)
    if deep is not None:
        return None, ConfigError(path, f"toml: {deep.message}", line=deep.line)
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        line = col = None
        m = _TOML_POS.search(msg)
        if m and m.group(1):
            line, col = int(m.group(1)), int(m.group(2))
        elif m:  # at end of document: the last line
            line = text.count("\n") + (0 if text.endswith("\n") else 1)
        reason = _TOML_POS.sub("", msg).strip()
        where = f"line {line}, column {col}" if col else (f"line {line}" if line else "")
        return None, ConfigError(path, f"toml: {where}: {reason}" if where else f"toml: {reason}",
                                 line=line, column=col)


def parse_layer(text: str, path: str, kind: str = "file") -> Layer | ConfigError:
    """A parsed Layer, or the parse error. Drop-in errors use Kata's wording."""
    data, err = parse_toml(text, path)
    if err is not None:
        if kind == "drop-in":
            return ConfigError(path, f"error decoding file {go_quote(path)}: {err.message}",
                               line=err.line, column=err.column)
        return err
    assert data is not None
    return Layer(path, kind, text, data)


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key, anything else is replaced (Kata's drop-in and containerd's imports)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def merge_layers(layers: Sequence[Layer]) -> tuple[dict[str, Any], dict[tuple[str, ...], Layer]]:
    """The merged tree and, for every leaf key path, the layer that set it last."""
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], Layer] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.data)
        for keypath in _leaf_paths(layer.data, ()):
            origins[keypath] = layer
    return merged, origins


def _leaf_paths(d: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from _leaf_paths(v, (*prefix, k))
        else:
            yield (*prefix, k)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


def _norm_table(name: str) -> tuple[str, ...]:
    parts = []
    for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.\s]+', name):
        parts.append(p.strip("\"'"))
    return tuple(parts)


def find_key_line(text: str, table: Sequence[str], key: str) -> int | None:
    """1-based line where `key` is assigned inside `[table]` (or as a dotted key); None if absent."""
    want = tuple(table)
    current: tuple[str, ...] = ()
    key_re = re.compile(rf"^\s*(?:([\w.\"'-]+)\.)?[\"']?{re.escape(key)}[\"']?\s*=")
    fallback = None
    for n, line in enumerate(text.splitlines(), 1):
        h = _HEADER.match(line)
        if h:
            current = _norm_table(h.group(1))
            continue
        m = key_re.match(line)
        if not m:
            continue
        full = current + (_norm_table(m.group(1)) if m.group(1) else ())
        if full == want:
            return n
        if fallback is None:
            fallback = n
    return fallback


_TOML_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "bool"), (int, "int64"), (float, "float64"), (str, "string"), (list, "array"),
    (Mapping, "table"),
)
"""How Kata's Go TOML decoder names a value's type (bool before int: a bool is an int here)."""


def _toml_type(v: Any) -> str:
    return next((name for t, name in _TOML_TYPES if isinstance(v, t)), type(v).__name__)


def _type_error(path: str, line: int | None, dotted: str, v: Any, dest: str) -> str:
    return (f"toml: line {line or 0} (last key {go_quote(dotted)}): incompatible types: "
            f"TOML value has type {_toml_type(v)}; destination has type {dest}")


@dataclass(frozen=True, slots=True)
class _Read:
    """A typed value read from the merged tree."""

    value: Any
    origin: str
    layer: Layer | None
    line: int | None


def _origin(layer: Layer | None) -> str:
    if layer is None:
        return "default"
    return f"{'drop-in' if layer.kind == 'drop-in' else 'file'}:{layer.path}"


def effective_config(
    layers: Sequence[Layer], *, handler: str, runtime: str = "go",
) -> tuple[ev.KataConfig, list[ConfigError]]:
    """The effective VFIO settings of a handler from its main file + drop-ins, and Kata's errors.

    Errors are what Kata itself reports when loading this configuration (type errors from its
    TOML decoder, `checkPCIeConfig`, vfio_mode); values that Kata would silently adjust (port
    counts above 16 in Go) are adjusted the same way.
    """
    if not layers:
        return default_config(handler, runtime=runtime), []
    main = layers[0]
    merged, origins = merge_layers(layers)
    errors: list[ConfigError] = []
    hyp, table = _hypervisor(merged, origins, main, handler, runtime, errors)
    r = _TypedReader(hyp, table, origins, handler, errors)
    cold = r.read("cold_plug_vfio", NO_PORT, "str")
    hot = r.read("hot_plug_vfio", NO_PORT, "str") if runtime == "go" else _Read(NO_PORT, "default", None, None)
    root = r.read("pcie_root_port", 0, "uint32")
    switch = r.read("pcie_switch_port", 0, "uint32")
    ann = r.read("enable_annotations", [], "list")
    machine = r.read("machine_type", DEFAULT_MACHINE_TYPE if hyp in ("qemu", "clh") else "", "str")

    cold_v = cold.value or NO_PORT  # coldPlugVFIO(): "" -> no-port
    hot_v = hot.value or NO_PORT
    root_v, switch_v = int(root.value), int(switch.value)
    if runtime == "go":  # pcieRootPort()/pcieSwitchPort() cap silently at 16
        root_v, switch_v = min(root_v, MAX_PCIE_PORTS), min(switch_v, MAX_PCIE_PORTS)

    cfg = ev.KataConfig(
        handler=handler, runtime=runtime, path=main.path,
        dropins=tuple(layer.path for layer in layers[1:]),
        cold_plug_vfio=cold_v, hot_plug_vfio=hot_v, pcie_root_port=root_v,
        pcie_switch_port=switch_v, enable_annotations=tuple(ann.value),
        machine_type=str(machine.value or ""), hypervisor=hyp,
        settings=(
            ev.SettingValue(key="cold_plug_vfio", value=cold_v, origin=cold.origin),
            ev.SettingValue(key="hot_plug_vfio", value=hot_v, origin=hot.origin),
            ev.SettingValue(key="pcie_root_port", value=str(root_v), origin=root.origin),
            ev.SettingValue(key="pcie_switch_port", value=str(switch_v), origin=switch.origin),
        ),
    )
    if errors:  # Kata stops at its TOML decoder's first error: no semantic checks after it
        return cfg, errors
    return cfg, _kata_checks(cfg, merged, origins, main, runtime, cold, hot, root, switch)


def _hypervisor(merged: Mapping[str, Any], origins: Mapping[tuple[str, ...], Layer], main: Layer,
                handler: str, runtime: str,
                errors: list[ConfigError]) -> tuple[str, Mapping[str, Any]]:
    """The hypervisor Kata uses (qemu unless the file names only another) and its table."""
    hyp_tables = merged.get("hypervisor", {})
    if not isinstance(hyp_tables, Mapping):
        layer = origins.get(("hypervisor",), main)
        errors.append(ConfigError(layer.path, _type_error(layer.path, find_key_line(layer.text, (), "hypervisor"),
                                                           "hypervisor", hyp_tables, "map"),
                                  key="hypervisor", handler=handler))
        hyp_tables = {}
    names = [k for k, v in hyp_tables.items() if isinstance(v, Mapping)]
    hyp = "qemu" if "qemu" in names or not names else sorted(names)[-1]
    if runtime == "go":
        for name in names:
            if name not in GO_HYPERVISORS:
                line = find_key_line(main.text, (), "hypervisor")
                errors.append(ConfigError(main.path, f"{main.path}: {ERR_INVALID_HYPERVISOR}: {go_quote(name)}",
                                          line=_table_line(main.text, ("hypervisor", name)) or line,
                                          key=f"hypervisor.{name}", handler=handler))
    table: Mapping[str, Any] = hyp_tables.get(hyp, {}) if isinstance(hyp_tables.get(hyp), Mapping) else {}
    return hyp, table


class _TypedReader:
    """Reads `[hypervisor.<hyp>]` keys as Kata's decoder would: a value of the wrong type is
    Kata's type error (and the default is used), with the file and line of the layer that set it."""

    def __init__(self, hyp: str, table: Mapping[str, Any],
                 origins: Mapping[tuple[str, ...], Layer], handler: str,
                 errors: list[ConfigError]) -> None:
        self.hyp, self.table, self.origins = hyp, table, origins
        self.handler, self.errors = handler, errors

    def read(self, key: str, default: Any, kind: str) -> _Read:
        keypath = ("hypervisor", self.hyp, key)
        layer = self.origins.get(keypath)
        if layer is None and key in self.table:  # a table where a value belongs: its leaves name the file
            layer = next((lay for kp, lay in reversed(list(self.origins.items())) if kp[:3] == keypath), None)
        if key not in self.table or layer is None:
            return _Read(default, "default", None, None)
        v = self.table[key]
        line = find_key_line(layer.text, keypath[:-1], key)
        dotted = ".".join(keypath)
        ok = True
        if kind == "str":
            ok = isinstance(v, str)
            dest = "config.PCIePort" if key.endswith("_vfio") else "string"
        elif kind == "uint32":
            ok = isinstance(v, int) and not isinstance(v, bool)
            dest = "uint32"
            if ok and not (0 <= v <= UINT32_MAX):
                self.errors.append(ConfigError(layer.path, f"toml: line {line or 0} (last key {go_quote(dotted)}): "
                                               f"{v} is out of range for uint32",
                                               line=line, key=key, handler=self.handler))
                return _Read(default, "default", None, None)
        elif kind == "list":
            ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
            dest = "[]string"
        else:
            dest = kind
        if not ok:
            self.errors.append(ConfigError(layer.path, _type_error(layer.path, line, dotted, v, dest),
                                           line=line, key=key, handler=self.handler))
            return _Read(default, "default", None, None)
        return _Read(v, _origin(layer), layer, line)


def _kata_checks(cfg: ev.KataConfig, merged: Mapping[str, Any],
                 origins: Mapping[tuple[str, ...], Layer], main: Layer, runtime: str,
                 cold: _Read, hot: _Read, root: _Read, switch: _Read) -> list[ConfigError]:
    """Kata's semantic checks once the file decoded: vfio_mode, then Go's `checkPCIeConfig` or
    runtime-rs's rule against root and switch ports together."""
    handler = cfg.handler
    rt = merged.get("runtime", {})
    vfio_mode = rt.get("vfio_mode") if isinstance(rt, Mapping) else None
    if vfio_mode not in (None, "") and vfio_mode not in VFIO_MODES:
        layer = origins.get(("runtime", "vfio_mode"), main)
        line = find_key_line(layer.text, ("runtime",), "vfio_mode")
        msg = (ERR_GO_VFIO_MODE if runtime == "go" else ERR_RS_VFIO_MODE).format(vfio_mode)
        return [ConfigError(layer.path, msg, line=line, key="vfio_mode", handler=handler)]
    if runtime == "go":
        msg, which = check_pcie_config(cfg.cold_plug_vfio, cfg.hot_plug_vfio, cfg.machine_type,
                                       cfg.hypervisor)
        if not msg:
            return []
        src = {"cold": cold, "hot": hot}[which]
        if src.layer is None:  # the offending key was defaulted: point at the other one
            src = hot if which == "cold" else cold
        layer = src.layer or main
        key = "cold_plug_vfio" if src is cold else "hot_plug_vfio"
        return [ConfigError(layer.path, msg, line=src.line, key=key, handler=handler)]
    if cfg.pcie_root_port > 0 and cfg.pcie_switch_port > 0:
        layer = switch.layer or root.layer or main
        return [ConfigError(layer.path, ERR_RS_ROOT_SWITCH,
                            line=(switch.line if switch.layer else root.line),
                            key="pcie_switch_port", handler=handler)]
    return []


def config_from_texts(
    main_path: str, main_text: str, dropins: Sequence[tuple[str, str]] = (), *,
    handler: str = "default", runtime: str = "go",
) -> tuple[ev.KataConfig | None, list[ConfigError]]:
    """For importers: the effective configuration from file contents (main, then drop-ins in the
    order given; pass them sorted by file name as Kata reads them). None when a file does not parse."""
    layers: list[Layer] = []
    for path, text, kind in [(main_path, main_text, "file"), *((p, t, "drop-in") for p, t in dropins)]:
        parsed = parse_layer(text, path, kind)
        if isinstance(parsed, ConfigError):
            return None, _with_handler([parsed], handler)
        layers.append(parsed)
    cfg, errors = effective_config(layers, handler=handler, runtime=runtime)
    return cfg, errors


def _table_line(text: str, table: tuple[str, ...]) -> int | None:
    for n, line in enumerate(text.splitlines(), 1):
        h = _HEADER.match(line)
        if h and _norm_table(h.group(1)) == table:
            return n
    return None


def check_pcie_config(cold: str, hot: str, machine_type: str, hypervisor: str) -> tuple[str, str]:
    """Kata's `checkPCIeConfig`, rule by rule: (error text or "", which key it is about).

    The `invalid hot-plug=... and cold-plug=...` text is built with (cold, hot) arguments in that
    order, so its `hot-plug=` label shows the cold-plug value and vice versa; kept as Kata prints it.
    """
    if hypervisor not in ("qemu", "clh"):
        return "", ""  # Kata only logs a warning and ignores the settings
    if cold != NO_PORT and hot != NO_PORT:
        return ERR_BOTH_SET.format(cold, hot), "cold"
    if cold == NO_PORT and hot == NO_PORT:
        return "", ""
    if machine_type not in ("q35", "virt"):
        return "", ""
    if hypervisor == "clh":
        if cold not in (NO_PORT, ROOT_PORT):
            return ERR_CLH_COLD, "cold"
        if hot not in (NO_PORT, ROOT_PORT):
            return ERR_CLH_HOT, "hot"
    port = hot if hot != NO_PORT else cold
    if port in (BRIDGE_PORT, ROOT_PORT, SWITCH_PORT):
        return "", ""
    return ERR_VFIO_PORT.format(cold), ("hot" if hot != NO_PORT else "cold")


def default_config(handler: str = "default", *, runtime: str = "go", assumed: bool = False) -> ev.KataConfig:
    """Kata's built-in defaults (no file): cold_plug_vfio = no-port."""
    return ev.KataConfig(
        handler=handler, runtime=runtime, path=None, assumed=assumed,
        settings=tuple(ev.SettingValue(key=k, value=v, origin="default")
                       for k, v in (("cold_plug_vfio", NO_PORT), ("hot_plug_vfio", NO_PORT),
                                    ("pcie_root_port", "0"), ("pcie_switch_port", "0"))),
    )


# ---- Pod annotations (kata-facts §1.5) -------------------------------------------------------


def _go_regex_search(pattern: str, text: str) -> bool:
    """Go's regexp.MatchString (unanchored); a pattern Go would reject simply never matches."""
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def annotation_enabled(enable_annotations: Iterable[str], key: str) -> bool:
    """Kata's checkAnnotationNameIsValid: the name after the hypervisor prefix must match a regex."""
    if not key.startswith(ANNOTATION_PREFIX):
        return True
    name = key[len(ANNOTATION_PREFIX):]
    return any(_go_regex_search(p, name) for p in enable_annotations)


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """A sandbox's effective VFIO settings after its pod annotations."""

    cold_plug_vfio: str
    hot_plug_vfio: str
    pcie_root_port: int
    pcie_switch_port: int
    settings: tuple[ev.SettingValue, ...]
    errors: tuple[ConfigError, ...] = ()
    refused: bool = False
    """True when Kata would refuse to create this sandbox because of its annotations."""


def apply_annotations(
    cfg: ev.KataConfig, annotations: Mapping[str, str], *, path: str = "",
    sandbox_id: str | None = None,
) -> SandboxSettings:
    """The handler's configuration with the pod's annotations applied as Kata applies them.

    Go: every `io.katacontainers.config.hypervisor.*` annotation must be enabled, else the sandbox
    is refused (`annotation <key> is not enabled`) and nothing is applied. hot_plug_vfio is applied
    then cold_plug_vfio, each forcing the other to no-port. runtime-rs skips non-enabled
    annotations silently and has no cold/hot_plug_vfio annotation handler (kata-facts §1.5).
    """
    applied = _Annotated(cfg, path, sandbox_id)
    if cfg.runtime == "go":
        applied.go(annotations)
    else:
        applied.rs(annotations)
    return applied.result()


class _Annotated:
    """A handler's four VFIO settings, with their origins, as annotations change them."""

    def __init__(self, cfg: ev.KataConfig, path: str, sandbox_id: str | None) -> None:
        self.cfg, self.path, self.sandbox_id = cfg, path, sandbox_id
        cur = {s.key: s for s in cfg.settings} or {s.key: s for s in default_config().settings}
        self.vals: dict[str, str] = {k: cur[k].value if k in cur else "" for k in VFIO_KEYS}
        self.origins: dict[str, str] = {k: cur[k].origin if k in cur else "default"
                                        for k in VFIO_KEYS}
        self.errors: list[ConfigError] = []

    def err(self, msg: str, key: str) -> None:
        self.errors.append(ConfigError(self.path, msg, key=key, handler=self.cfg.handler,
                                       sandbox_id=self.sandbox_id))

    def set(self, key: str, value: str, ann: str) -> None:
        self.vals[key], self.origins[key] = value, f"annotation:{ann}"

    def go(self, annotations: Mapping[str, str]) -> None:
        """The Go shim: refuse on the first annotation not enabled; hot, then cold, then ports."""
        for key in sorted(k for k in annotations if k.startswith(ANNOTATION_PREFIX)):
            if not annotation_enabled(self.cfg.enable_annotations, key):
                self.err(ERR_NOT_ENABLED.format(key), key)
                return  # Kata returns on the first one
        for ann, key, other in ((ANN_HOT, "hot_plug_vfio", "cold_plug_vfio"),
                                (ANN_COLD, "cold_plug_vfio", "hot_plug_vfio")):
            if self.errors or ann not in annotations:
                continue
            v = annotations[ann] or NO_PORT
            if v not in PORTS:
                self.err(ERR_ANN_PORT.format(annotations[ann]), ann)
            else:
                self.set(key, v, ann)
                self.set(other, NO_PORT, ann)
        for ann, key, too_many in ((ANN_ROOT_PORT, "pcie_root_port", ERR_TOO_MANY_ROOT),
                                   (ANN_SWITCH_PORT, "pcie_switch_port", ERR_TOO_MANY_SWITCH)):
            if self.errors or ann not in annotations:
                continue
            raw = annotations[ann]
            if not raw.isdigit() or int(raw) > 2**64 - 1:
                self.err(ERR_ANN_UINT.format(ann), ann)
                continue
            n = int(raw)
            if n > 0:
                self.set(key, str(n), ann)
                if n > MAX_PCIE_PORTS:  # createPCIeTopology refuses it when the VM starts
                    self.err(too_many, ann)

    def rs(self, annotations: Mapping[str, str]) -> None:
        """runtime-rs: enabled port annotations only; no cold/hot_plug_vfio annotation."""
        for ann, key in ((ANN_ROOT_PORT, "pcie_root_port"), (ANN_SWITCH_PORT, "pcie_switch_port")):
            if ann in annotations and annotation_enabled(self.cfg.enable_annotations, ann):
                raw = annotations[ann]
                if raw.isdigit():
                    n = int(raw)
                    self.set(key, str(n), ann)
                    if n > MAX_PCIE_PORTS:
                        kind = "root" if key == "pcie_root_port" else "switch"
                        self.err(f"{kind} ports allocated exceeds the max {MAX_PCIE_PORTS}", ann)

    def result(self) -> SandboxSettings:
        vals, errors = self.vals, self.errors
        settings = tuple(ev.SettingValue(key=k, value=vals[k], origin=self.origins[k])
                         for k in VFIO_KEYS)
        return SandboxSettings(
            cold_plug_vfio=vals["cold_plug_vfio"] or NO_PORT,
            hot_plug_vfio=vals["hot_plug_vfio"] or NO_PORT,
            pcie_root_port=_int(vals["pcie_root_port"]),
            pcie_switch_port=_int(vals["pcie_switch_port"]),
            settings=settings, errors=tuple(errors), refused=bool(errors) and self.cfg.runtime == "go",
        )


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        return 0


# ---- containerd runtime handlers (pure part) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeHandler:
    """A containerd runtime handler that runs Kata."""

    name: str
    runtime_type: str = ""
    runtime_path: str = ""
    config_path: str = ""
    """`options.ConfigPath`, empty when not set."""
    pod_annotations: tuple[str, ...] = ()
    defined_in: str = ""
    """The containerd configuration file (main or import) that defined it last."""
    runtime: str = "go"

    @property
    def shim_binary(self) -> str:
        """The shim containerd starts: runtime_path, else `containerd-shim-<name>-v<N>` from the type."""
        if self.runtime_path:
            return self.runtime_path
        parts = self.runtime_type.split(".")
        if len(parts) >= 4 and parts[0] == "io" and parts[1] == "containerd":
            return f"containerd-shim-{'-'.join(parts[2:-1])}-{parts[-1]}"
        return ""


def is_kata_runtime(name: str, table: Mapping[str, Any]) -> bool:
    rt = str(table.get("runtime_type", ""))
    path = str(table.get("runtime_path", ""))
    opts = table.get("options", {})
    cfgp = str(opts.get("ConfigPath", "")) if isinstance(opts, Mapping) else ""
    return (rt.startswith("io.containerd.kata") or "containerd-shim-kata" in path
            or "kata-containers" in cfgp)


def handlers_from_containerd(data: Mapping[str, Any], defined_in: str = "",
                             origins: Mapping[str, str] | None = None) -> list[RuntimeHandler]:
    """Kata runtime handlers in a (merged) containerd configuration, 1.x and 2.x layouts."""
    found: dict[str, RuntimeHandler] = {}
    for table_path in CRI_RUNTIME_TABLES:
        node: Any = data
        for part in table_path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            continue
        for name, table in node.items():
            if not isinstance(table, Mapping) or name in found or not is_kata_runtime(name, table):
                continue
            opts = table.get("options", {})
            opts = opts if isinstance(opts, Mapping) else {}
            cfgp = str(opts.get("ConfigPath", "") or opts.get("config_path", "") or "")
            path = str(table.get("runtime_path", "") or "")
            runtime = "rs" if ("runtime-rs" in path or "/runtime-rs/" in cfgp) else "go"
            pa = table.get("pod_annotations", [])
            found[name] = RuntimeHandler(
                name=name, runtime_type=str(table.get("runtime_type", "")), runtime_path=path,
                config_path=cfgp, pod_annotations=tuple(str(x) for x in pa) if isinstance(pa, list) else (),
                defined_in=(origins or {}).get(name, defined_in), runtime=runtime,
            )
    return [found[k] for k in sorted(found)]


def _with_handler(errors: Iterable[ConfigError], handler: str) -> list[ConfigError]:
    return [ConfigError(e.path, e.message, e.line, e.column, e.key, handler, e.sandbox_id) for e in errors]
