"""Provides the `vfiowatch check` line for Kata: which configuration each handler uses, cold_plug_vfio.

One line (name `kata config`): for each runtime handler `<path> (handler <name>), cold_plug_vfio =
<value>`; `no Kata installed: assuming built-in default cold_plug_vfio = no-port` when there is
none; a failing line naming file, line and Kata's own error when a configuration is invalid.
"""

from __future__ import annotations

import time

from diag import events as ev
from diag.common.paths import HostPaths
from diag.common.text import safe
from diag.sources.kata import discovery
from diag.sources.kata.source import KataWatcher
from diag.sources.preflight import CheckResult, check


def describe(c: ev.KataConfig) -> str:
    """`kata config: <path> (handler <name>), cold_plug_vfio = <value>` (+ the drop-in that set it)."""
    origin = next((s.origin for s in c.settings if s.key == "cold_plug_vfio"), "default")
    via = f" (from {origin})" if origin.startswith("drop-in:") else ""
    rt = " runtime-rs" if c.runtime == "rs" else ""
    return (f"kata config: {safe(c.path)} (handler {safe(c.handler)}{rt}), "
            f"cold_plug_vfio = {safe(c.cold_plug_vfio)}{via}")


@check
def kata_check(paths: HostPaths) -> CheckResult:
    w = KataWatcher(paths, {"journal": False})
    w.step(time.time_ns(), force=True)
    disc = w.discovery or discovery.Discovery()
    errors = disc.errors
    configs = list(w.configs.values())
    if configs and all(c.assumed for c in configs):
        return CheckResult("kata config", True,
                           "no Kata installed: assuming built-in default cold_plug_vfio = no-port")
    parts = [describe(c) for c in sorted(configs, key=lambda c: c.handler)]
    if errors:
        e = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        parts.append(f"invalid: {safe(e.where())}: {safe(e.message)}{more}")
        return CheckResult("kata config", False, "; ".join(parts),
                           fix="fix the file Kata names (Kata itself refuses to start sandboxes with it)",
                           level="fail" if not configs else "warn")
    if not parts:
        return CheckResult("kata config", False, "no usable Kata configuration", level="warn")
    return CheckResult("kata config", True, "; ".join(parts))



@check
def kata_events(paths: HostPaths) -> CheckResult:
    """Whether the kata source can follow processes and files by the kernel's notifications."""
    from diag.sources.kata.changes import ChangeFeed

    feed = ChangeFeed(paths)
    try:
        feed.start()
    finally:
        feed.close()
    if feed.mode == "events":
        return CheckResult("kata events", True,
                           "process events (proc connector) and inotify: sandboxes and Kata's "
                           "configuration are seen as they change, nothing is polled")
    return CheckResult("kata events", False, feed.reason, fix=feed.hint, level="warn")
