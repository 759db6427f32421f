"""Provides the reader of the SR-IOV network device plugin's configuration files under the root.

The plugin reads `/etc/pcidp/config.json` unless `--config-file` says otherwise. Run as a
DaemonSet, that path is inside its container (a ConfigMap mount), so the running plugin's file is
read through `/proc/<pid>/root` (process `sriovdp`, its own `--config-file`); a host file at
/etc/pcidp/config.json (the plugin run as a host service) is read too. Parsing and selection are
pure (`diag.core.sriovdp`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from diag.core.sriovdp import DpConfig, parse_config
from diag.paths import HostPaths

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


def find_files(paths: HostPaths) -> list[DpFile]:
    """The configuration files a running plugin (or a host install) uses."""
    out = []
    if os.path.isfile(paths.host(DEFAULT_CONFIG)):
        out.append(DpFile(DEFAULT_CONFIG, "host"))
    try:
        pids = [p for p in os.listdir(paths.proc) if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            with open(paths.proc / pid / "comm", "rb") as fh:
                if fh.read(32).strip() != PLUGIN_COMM.encode():
                    continue
            with open(paths.proc / pid / "cmdline", "rb") as fh:
                argv = [a.decode("utf-8", "replace") for a in fh.read(65536).split(b"\0") if a]
        except OSError:
            continue
        cfg = _config_arg(argv)
        if not cfg.startswith("/"):
            continue  # relative to the plugin's cwd: not followed
        out.append(DpFile(f"/proc/{pid}/root{cfg}", f"sriovdp pid {pid}"))
    return out


def read_configs(paths: HostPaths) -> list[DpConfig]:
    """Every configuration found, parsed (an unreadable or bad file is a DpConfig with `error`)."""
    out = []
    for f in find_files(paths):
        label = f.host_path if f.origin == "host" else f"{f.host_path} ({f.origin})"
        try:
            with open(paths.host(f.host_path), "rb") as fh:
                raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            out.append(DpConfig(path=label, error=f"{label}: {exc.strerror or exc}"))
            continue
        if len(raw) > MAX_BYTES:
            out.append(DpConfig(path=label, error=f"{label}: larger than {MAX_BYTES} bytes, not read"))
            continue
        out.append(parse_config(raw.decode("utf-8", "replace"), label))
    return out
