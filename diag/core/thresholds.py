"""Provides CoreConfig: the core's thresholds and allow-lists, parsed purely from a TOML mapping.

Reading the agent's settings file is the caller's job (`diag.runtime.settings.load`);
`parse(mapping, path)` validates the `[core]` table and names the key at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from diag.common.errors import ConfigError

NS = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreConfig:
    """Every tunable of the core. Durations are seconds in TOML, nanoseconds here."""

    history_per_device: int = 64
    """Driver moves and link notes kept per device (memory stays bounded)."""
    recent_events: int = 2000
    """Events kept for the dashboard's stream."""
    resolved_kept: int = 200
    """Resolved findings kept in snapshots."""
    episode_window_ns: int = 10 * NS
    """Events about one device within this window merge into one episode."""
    stranded_grace_ns: int = 60 * NS
    """vf-stranded-on-vfio: how long a VF may sit on vfio-pci unheld."""
    stuck_grace_ns: int = 30 * NS
    """vf-stuck-unbound: how long a VF may sit driverless with a host driver override."""
    netdev_grace_ns: int = 5 * NS
    """vf-netdev-lost: how long after an unbind a VF may stay without its netdev."""
    known_error_ttl_ns: int = 600 * NS
    """kata-known-error: a finding resolves when its line has not repeated for this long."""
    flapping_moves: int = 4
    """driver-flapping: binds to a new driver within flapping_window_ns that make a flap."""
    flapping_window_ns: int = 120 * NS
    expected_actors: tuple[str, ...] = (
        "containerd-shim-kata-v2", "containerd-shim", "kata-runtime", "driverctl",
        "sriov-network-config-daemon", "sriov-network-c",
    )
    """vfio-bind-unexpected-actor: comm or exe basenames allowed to bind to vfio-pci."""
    allow_vfio: tuple[str, ...] = ()
    """BDFs (or PF BDFs, covering their VFs) declared as intended for vfio-pci."""
    host_drivers: tuple[str, ...] = ()
    """Extra driver names to treat as host network drivers (besides any non-vfio driver)."""
    driverctl_overrides: tuple[str, ...] = ()
    """BDFs with a persistent driverctl override to vfio-pci (filled from /etc/driverctl.d)."""
    disabled_rules: tuple[str, ...] = ()
    severity_overrides: tuple[tuple[str, str], ...] = field(default_factory=tuple)


_DURATIONS = {
    "episode_window": "episode_window_ns",
    "stranded_grace": "stranded_grace_ns",
    "stuck_grace": "stuck_grace_ns",
    "flapping_window": "flapping_window_ns",
    "netdev_grace": "netdev_grace_ns",
    "known_error_ttl": "known_error_ttl_ns",
}


def parse(doc: Mapping[str, Any], path: str = "<config>",
          lines: Mapping[str, int] | None = None) -> CoreConfig:
    """Build a CoreConfig from the `[core]` table of a parsed TOML document.

    Raises ConfigError naming `path`, the line (when `lines` maps `core.<key>` to one) and the
    key on any unknown key or wrong type, with the fix as its hint.
    """
    table = doc.get("core", {})
    if not isinstance(table, Mapping):
        where = f"{path}:{lines['core']}" if lines and "core" in lines else path
        raise ConfigError(f"{where}: [core] must be a table", hint="see README, Configuration")
    names = {f.name: f for f in fields(CoreConfig)}
    kwargs: dict[str, Any] = {}
    try:
        _parse_keys(table, path, names, kwargs)
        for rule, label in kwargs.get("severity_overrides", ()):
            if label.strip().upper() not in ("INFO", "WARNING", "ERROR", "CRITICAL"):
                raise _KeyError(
                    f"{path}: core.severity_overrides.{rule}: unknown severity {label!r}",
                    key="severity_overrides", hint="use one of info, warning, error, critical")
    except _KeyError as exc:
        line = (lines or {}).get(f"core.{exc.key}")
        if line is not None:
            exc.message = exc.message.replace(f"{path}: ", f"{path}:{line}: ", 1)
            exc.args = (exc.message,)
        raise
    return CoreConfig(**kwargs)


class _KeyError(ConfigError):
    """A ConfigError about one key of [core] (so the caller can add its line)."""

    def __init__(self, message: str, *, key: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.key = key


def _parse_keys(table: Mapping[str, Any], path: str, names: Mapping[str, Any],
                kwargs: dict[str, Any]) -> None:
    for key, value in table.items():
        if key in _DURATIONS:
            if not isinstance(value, (int, float)) or value < 0:
                raise _KeyError(
                    f"{path}: core.{key} must be a non-negative number of seconds, got {value!r}",
                    key=key, hint=f"for example {key} = 30",
                )
            kwargs[_DURATIONS[key]] = int(value * NS)
        elif key == "severity_overrides":
            if not isinstance(value, Mapping):
                raise _KeyError(f"{path}: core.severity_overrides must be a table", key=key,
                                hint='for example severity_overrides = { "driver-flapping" = "error" }')
            kwargs[key] = tuple((str(k), str(v)) for k, v in value.items())
        elif key in names and not key.endswith("_ns"):
            default = getattr(CoreConfig(), key)
            if isinstance(default, tuple):
                if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                    raise _KeyError(f"{path}: core.{key} must be a list of strings, got {value!r}",
                                    key=key, hint=f'for example {key} = ["a", "b"]')
                kwargs[key] = tuple(value)
            elif isinstance(default, int):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise _KeyError(f"{path}: core.{key} must be a positive integer, got {value!r}",
                                    key=key, hint=f"for example {key} = {default}")
                kwargs[key] = value
        else:
            known = sorted([*(k for k in names if not k.endswith("_ns")), *_DURATIONS])
            raise _KeyError(
                f"{path}: unknown key core.{key}",
                key=key, hint="remove it or use a known key: " + ", ".join(known),
            )
