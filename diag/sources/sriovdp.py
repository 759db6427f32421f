"""Provides the reader of the SR-IOV network device plugin's configuration files under the root.

The plugin reads `/etc/pcidp/config.json` unless `--config-file` says otherwise. Run as a
DaemonSet, that path is inside its container (a ConfigMap mount), so the running plugin's file is
read through `/proc/<pid>/root` (process `sriovdp`, its own `--config-file`); a host file at
/etc/pcidp/config.json (the plugin run as a host service) is read too. Parsing and selection are
pure (`diag.core.sriovdp`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from diag.common.paths import HostPaths, OutsideRoot
from diag.core.sriovdp import DpConfig, parse_config

DEFAULT_CONFIG = "/etc/pcidp/config.json"
PLUGIN_COMM = "sriovdp"
MAX_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class DpFile:
    """One configuration file and where it came from."""

    host_path: str
    """The path under the root (`/etc/pcidp/config.json`, `/proc/<pid>/root/etc/pcidp/config.json`)."""
    origin: str
    """`host` or `sriovdp pid <N>`."""


def _config_arg(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a.startswith("--config-file="):
            return a.split("=", 1)[1]
        if a == "--config-file" and i + 1 < len(argv):
            return argv[i + 1]
    return DEFAULT_CONFIG


def plugin_pids(paths: HostPaths, comms: Mapping[int, str] | None = None) -> list[int]:
    """Pids of running plugins (`comm` = sriovdp): from `comms` when the caller already read
    every pid's comm (the Kata source's process cache), else from /proc under the root."""
    if comms is not None:
        return sorted(p for p, c in comms.items() if c == PLUGIN_COMM)
    out = []
    try:
        pids = [p for p in paths.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            if paths.read_bytes(f"/proc/{pid}/comm", 64).strip() == PLUGIN_COMM.encode():
                out.append(int(pid))
        except OSError:
            continue
    return sorted(out)


def find_files(paths: HostPaths, comms: Mapping[int, str] | None = None) -> list[DpFile]:
    """The configuration files a running plugin (or a host install) uses.

    A plugin's own file is `/proc/<pid>/root<--config-file>`: with --root / the kernel follows
    that link into the plugin's mount namespace; under another --root, HostPaths refuses the
    absolute link in /proc (it cannot tell a copied tree's link from the kernel's) and the
    refusal is reported with the file (a tree may hold it as a plain directory).
    """
    out = []
    if paths.is_file(DEFAULT_CONFIG):
        out.append(DpFile(DEFAULT_CONFIG, "host"))
    for pid in plugin_pids(paths, comms):
        try:
            raw = paths.read_bytes(f"/proc/{pid}/cmdline", 65536)
        except OSError:
            continue
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        cfg = _config_arg(argv)
        if not cfg.startswith("/"):
            continue  # relative to the plugin's cwd: not followed
        out.append(DpFile(f"/proc/{pid}/root{cfg}", f"sriovdp pid {pid}"))
    return out


def signature(paths: HostPaths, comms: Mapping[int, str] | None = None) -> tuple[object, ...]:
    """What changes when the configuration the plugins use can have changed: their pids and
    each file's stat (the Kata source re-reads the files only then)."""
    out: list[object] = []
    for f in find_files(paths, comms):
        try:
            st = paths.stat(f.host_path)
            out.append((f.host_path, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            out.append((f.host_path, exc.errno))
    return tuple(out)


def read_configs(paths: HostPaths, comms: Mapping[int, str] | None = None) -> list[DpConfig]:
    """Every configuration found, parsed (an unreadable or bad file is a DpConfig with `error`)."""
    out = []
    for f in find_files(paths, comms):
        label = f.host_path if f.origin == "host" else f"{f.host_path} ({f.origin})"
        try:
            raw = paths.read_bytes(f.host_path, MAX_BYTES + 1, regular=True)
        except OSError as exc:
            why = str(exc) if isinstance(exc, OutsideRoot) else (exc.strerror or str(exc))
            out.append(DpConfig(path=label, error=f"{label}: {why}"))
            continue
        if len(raw) > MAX_BYTES:
            out.append(DpConfig(path=label, error=f"{label}: larger than {MAX_BYTES} bytes, not read"))
            continue
        out.append(parse_config(raw.decode("utf-8", "replace"), label))
    return out
