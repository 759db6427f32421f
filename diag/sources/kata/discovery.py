"""Provides Kata configuration discovery: which files each runtime handler uses, read under --root.

Discovery follows Kata exactly (kata-facts §1.1-1.2; `loadRuntimeConfig` in the Go shim's
create.go, `load_config` in runtime-rs):

- Go shim: containerd runtime `options.ConfigPath`, then `KATA_CONF_FILE` (>= 4.0: only when
  it resolves to a shipped default path, else Kata's error text), then the default paths.
- runtime-rs: `KATA_CONF_FILE` first (same rule), then `ConfigPath`, then its three defaults.
- The main file is resolved through symlinks; every entry of `config.d/` beside the resolved
  file is read, to be merged on top in file-name order.

Readers only (files under the injectable root, no threads, no clock): `read_containerd`,
`load_handler`, `discover`. What the files mean is `diag.sources.kata.effective`'s (pure); the
watching loop lives in `diag.sources.kata.source`.

    from diag.sources.kata import discovery
    discovery.discover(HostPaths.at(tree)).configs   # on a copied host tree
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from diag import events as ev
from diag.common.paths import HostPaths, OutsideRoot
from diag.sources.kata.effective import (
    CONTAINERD_CONFIGS,
    ERR_KATA_CONF_FILE,
    GO_SHARE_PATHS,
    GO_SYSCONF_PATH,
    MAX_FILE_BYTES,
    RS_DEFAULT_PATHS,
    ConfigError,
    Layer,
    RuntimeHandler,
    _with_handler,
    deep_merge,
    default_config,
    effective_config,
    go_quote,
    handlers_from_containerd,
    parse_layer,
    parse_toml,
)


def resolve(paths: HostPaths, host_path: str) -> str | None:
    """The host path after following symlinks inside the root (like EvalSymlinks); None if
    absent or refused (a link that leads outside --root: HostPaths notes it)."""
    if not host_path.startswith("/"):
        return None
    try:
        return paths.resolve(host_path)
    except OSError:
        return None


def _read_text(paths: HostPaths, host_path: str) -> tuple[str | None, ConfigError | None]:
    try:
        raw = paths.read_bytes(host_path, MAX_FILE_BYTES + 1, regular=True)
    except OSError as exc:
        why = str(exc) if isinstance(exc, OutsideRoot) else (exc.strerror or str(exc))
        return None, ConfigError(host_path, f"open {host_path}: {why}")
    if len(raw) > MAX_FILE_BYTES:
        return None, ConfigError(host_path, f"{host_path}: larger than {MAX_FILE_BYTES} bytes, not read")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, ConfigError(host_path, f"{host_path}: line {line}: invalid UTF-8 (byte {exc.start})",
                                 line=line)


@dataclass(frozen=True, slots=True)
class ContainerdView:
    """What containerd's configuration says about Kata."""

    handlers: tuple[RuntimeHandler, ...] = ()
    files: tuple[str, ...] = ()
    """Every containerd file read (main + imports), host paths."""
    watch_dirs: tuple[str, ...] = ()
    """Directories whose listing matters (import globs)."""
    errors: tuple[ConfigError, ...] = ()


def read_containerd(paths: HostPaths, config_file: str | None = None) -> ContainerdView:
    """Read containerd's configuration and its `imports` (globs, relative to the importing file).

    Like containerd's LoadConfig: the main file first, then each import in order (breadth-first,
    each file once), every one merged over the previous ones.
    """
    candidates = [config_file] if config_file else list(CONTAINERD_CONFIGS)
    main = next((c for c in candidates if paths.is_file(c)), None)
    if main is None:
        return ContainerdView()
    files: list[str] = []
    dirs: list[str] = []
    errors: list[ConfigError] = []
    merged: dict[str, Any] = {}
    handler_origin: dict[str, str] = {}
    pending = [main]
    seen: set[str] = set()
    while pending and len(seen) < 256:
        cur = pending.pop(0)
        if cur in seen:
            continue
        seen.add(cur)
        files.append(cur)
        text, err = _read_text(paths, cur)
        if err is not None:
            errors.append(err)
            continue
        assert text is not None
        data, perr = parse_toml(text, cur)
        if perr is not None:
            errors.append(perr)
            continue
        assert data is not None
        merged = deep_merge(merged, data)
        for h in handlers_from_containerd(data):
            handler_origin[h.name] = cur
        for imp in data.get("imports", []) if isinstance(data.get("imports"), list) else []:
            imp = os.path.normpath(str(imp))
            if not imp.startswith("/"):
                imp = os.path.join(os.path.dirname(cur), imp)
            if "*" in imp:
                dirs.append(os.path.dirname(imp))
                pending.extend(paths.glob(imp))
            else:
                pending.append(imp)
    handlers = handlers_from_containerd(merged, main, handler_origin)
    return ContainerdView(tuple(handlers), tuple(files), tuple(dict.fromkeys(dirs)), tuple(errors))


@dataclass(frozen=True, slots=True)
class HandlerLoad:
    """The result of loading one handler's Kata configuration."""

    handler: str
    config: ev.KataConfig | None
    """None when Kata could not load it (the errors say why)."""
    errors: tuple[ConfigError, ...] = ()
    files: tuple[str, ...] = ()
    """Host paths whose change should trigger a reload (files and directories)."""
    how: str = ""
    """How the main file was chosen: `ConfigPath`, `KATA_CONF_FILE`, `default`, `none`."""


def shipped_paths(runtime: str, runtime_path: str = "") -> tuple[str, ...]:
    """Kata's GetDefaultConfigFilePaths for a shim, by build prefix when the install path shows it."""
    if runtime == "rs":
        return RS_DEFAULT_PATHS
    if runtime_path.startswith("/opt/kata/"):
        return (GO_SYSCONF_PATH, GO_SHARE_PATHS[1])
    if runtime_path.startswith("/usr/"):
        return (GO_SYSCONF_PATH, GO_SHARE_PATHS[0])
    return (GO_SYSCONF_PATH, *GO_SHARE_PATHS)


def _is_shipped(paths: HostPaths, env_path: str, runtime: str, runtime_path: str) -> bool:
    if not env_path.startswith("/"):
        return False  # the shim runs with cwd = bundle; a relative path is never a shipped one
    resolved = resolve(paths, env_path)
    if resolved is None:
        return False
    return any(resolve(paths, d) == resolved for d in shipped_paths(runtime, runtime_path))


def load_handler(
    paths: HostPaths, handler: RuntimeHandler, env: Mapping[str, str] | None = None,
) -> HandlerLoad:
    """Choose the main file as the handler's shim would, then read, merge and validate it."""
    env = env or {}
    watch: list[str] = []
    chosen = ""
    how = "default"
    kata_conf = env.get("KATA_CONF_FILE", "")
    err_env: ConfigError | None = None
    if kata_conf and not _is_shipped(paths, kata_conf, handler.runtime, handler.runtime_path):
        err_env = ConfigError(kata_conf, ERR_KATA_CONF_FILE.format(go_quote(kata_conf)),
                              key="KATA_CONF_FILE", handler=handler.name)
    order = (("KATA_CONF_FILE", kata_conf), ("ConfigPath", handler.config_path)) if handler.runtime == "rs" \
        else (("ConfigPath", handler.config_path), ("KATA_CONF_FILE", kata_conf))
    for name, value in order:
        if value:
            if name == "KATA_CONF_FILE" and err_env is not None:
                return HandlerLoad(handler.name, None, (err_env,), tuple(watch), how=name)
            chosen, how = value, name
            break
    defaults = shipped_paths(handler.runtime, handler.runtime_path)
    if not chosen:
        watch.extend(defaults)
        for d in defaults:
            if resolve(paths, d) is not None:
                chosen = d
                break
        if not chosen:
            if handler.runtime == "rs":  # runtime-rs: io::ErrorKind::NotFound, no list of paths
                msg = f"no runtime-rs configuration file: none of {', '.join(defaults)} exists"
            else:
                tried = ", ".join(f"config file {go_quote(d)} unresolvable: file {d} does not exist"
                                  for d in defaults)
                msg = f"Cannot find usable config file ({tried})"
            return HandlerLoad(handler.name, None, (ConfigError(defaults[0], msg, handler=handler.name),),
                               tuple(watch), how="none")
    watch.append(chosen)
    resolved = resolve(paths, chosen)
    if resolved is None:
        return HandlerLoad(handler.name, None,
                           (ConfigError(chosen, f"Cannot find usable config file (file {chosen} does not exist)",
                                        key=how if how != "default" else None, handler=handler.name),),
                           tuple(watch), how=how)
    layers, errors, files = read_layers(paths, resolved)
    watch.extend(files)
    if errors:
        return HandlerLoad(handler.name, None, tuple(_with_handler(errors, handler.name)), tuple(watch), how)
    cfg, verrs = effective_config(layers, handler=handler.name, runtime=handler.runtime)
    return HandlerLoad(handler.name, None if verrs else cfg, tuple(verrs), tuple(watch), how)


def read_layers(paths: HostPaths, resolved_main: str) -> tuple[list[Layer], list[ConfigError], list[str]]:
    """Main file + `config.d/*` (file-name order) as Layers; read errors stop like Kata's do."""
    files = [resolved_main]
    text, err = _read_text(paths, resolved_main)
    if err is not None:
        return [], [err], files
    assert text is not None
    first = parse_layer(text, resolved_main, "file")
    if isinstance(first, ConfigError):
        return [], [first], files
    layers = [first]
    dropdir = os.path.join(os.path.dirname(resolved_main), "config.d")
    files.append(dropdir)
    try:
        names = sorted(paths.listdir(dropdir))
    except FileNotFoundError:
        return layers, [], files
    except OSError as exc:
        why = str(exc) if isinstance(exc, OutsideRoot) else exc.strerror
        return layers, [ConfigError(dropdir, f"error reading {go_quote(dropdir)} directory: {why}")], files
    for name in names:
        p = os.path.join(dropdir, name)
        files.append(p)
        if paths.is_dir(p):
            return layers, [ConfigError(p, f"error reading file {go_quote(p)}: read {p}: is a directory")], files
        text, err = _read_text(paths, p)
        if err is not None:
            return layers, [ConfigError(p, f"error reading file {go_quote(p)}: {err.message}")], files
        assert text is not None
        layer = parse_layer(text, p, "drop-in")
        if isinstance(layer, ConfigError):
            return layers, [layer], files
        layers.append(layer)
    return layers, [], files


@dataclass(frozen=True, slots=True)
class Discovery:
    """Everything discovered about Kata's configuration on this host at one moment."""

    loads: tuple[HandlerLoad, ...] = ()
    containerd: ContainerdView = field(default_factory=ContainerdView)
    installed: bool = True
    """False when neither containerd nor the default paths show any Kata configuration."""
    configured_runtimes: tuple[tuple[str, str], ...] = ()
    """Each containerd handler and the runtime its configuration gives (before a running
    shim's): what `runtimes` could change (the watcher's fingerprint compares against it)."""

    @property
    def configs(self) -> tuple[ev.KataConfig, ...]:
        return tuple(load.config for load in self.loads if load.config is not None)

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return tuple(e for load in self.loads for e in load.errors) + self.containerd.errors

    @property
    def watch(self) -> tuple[str, ...]:
        """Every host path (files and dirs) whose change can change the result."""
        out = [*CONTAINERD_CONFIGS, *self.containerd.files, *self.containerd.watch_dirs,
               GO_SYSCONF_PATH, *GO_SHARE_PATHS, *RS_DEFAULT_PATHS]
        for load in self.loads:
            out.extend(load.files)
        return tuple(dict.fromkeys(out))


def discover(
    paths: HostPaths, *, containerd_config: str | None = None,
    envs: Mapping[str, Mapping[str, str]] | None = None,
    default_env: Mapping[str, str] | None = None,
    runtimes: Mapping[str, str] | None = None,
) -> Discovery:
    """One HandlerLoad per Kata runtime handler (or one `default` handler, or the assumed defaults).

    `envs` maps a handler name to a running shim's environment (for KATA_CONF_FILE); `default_env`
    is used for handlers without a running shim (containerd's own environment, which shims inherit).
    `runtimes` maps a handler to the runtime its running shim shows (`rs` by install path) when
    containerd's configuration does not say (no runtime_path, a shim found on PATH).
    """
    envs = envs or {}
    view = read_containerd(paths, containerd_config)
    configured = tuple((h.name, h.runtime) for h in view.handlers)
    if runtimes:
        fixed = tuple(replace(h, runtime=runtimes.get(h.name, h.runtime)) for h in view.handlers)
        view = replace(view, handlers=fixed)
    loads: list[HandlerLoad] = []
    for h in view.handlers:
        loads.append(load_handler(paths, h, envs.get(h.name, default_env)))
    if view.handlers:
        return Discovery(tuple(loads), view, True, configured)
    # No containerd handler: what a shim started without options would load.
    go_present = any(resolve(paths, p) is not None for p in (GO_SYSCONF_PATH, *GO_SHARE_PATHS))
    rs_present = any(resolve(paths, p) is not None for p in RS_DEFAULT_PATHS)
    if go_present or not rs_present:
        load = load_handler(paths, RuntimeHandler(name="default"), envs.get("default", default_env))
        if load.how == "none":
            return Discovery((HandlerLoad("default", default_config(assumed=True), (), load.files, "none"),),
                             view, False)
        loads.append(load)
    if rs_present:
        loads.append(load_handler(paths, RuntimeHandler(name="default-rs" if go_present else "default",
                                                        runtime="rs"),
                                  envs.get("default-rs", default_env)))
    return Discovery(tuple(loads), view, True)
