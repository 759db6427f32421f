"""Provides the `vfiowatch check` lines for Kata: each handler's configuration, and its exposure.

`kata config`: for each runtime handler `<path> (handler <name>), cold_plug_vfio = <value>`;
`no Kata installed: assuming built-in default cold_plug_vfio = no-port` when there is none; a
failing line naming file, line and Kata's own error when a configuration is invalid.

`kata exposure`: each handler exposed to a known Kata VFIO bug (rule `kata-vfio-exposure`),
with why (the version and where it was read, the effective cold_plug_vfio and its origin, the
VFs pods can be given) and the fix (the drop-in to write, or the release that fixes it); ✗ (fail)
for a VF that will be stranded, a warning for a pod Kata will refuse or an unknown version.

Texts are returned raw: `vfiowatch check` escapes each line once as it prints it (and JSON
escapes on its own), so a hostile handler name is shown escaped once, not twice.
"""

from __future__ import annotations

import time

from diag import events as ev
from diag.common.paths import HostPaths
from diag.core import kata_exposure as kx
from diag.sources.kata import discovery
from diag.sources.kata.source import KataWatcher, exposure_now
from diag.sources.preflight import CheckResult, check


def describe(c: ev.KataConfig) -> str:
    """`kata config: <path> (handler <name>), cold_plug_vfio = <value>` (+ the drop-in that set it)."""
    origin = next((s.origin for s in c.settings if s.key == "cold_plug_vfio"), "default")
    via = f" (from {origin})" if origin.startswith("drop-in:") else ""
    rt = " runtime-rs" if c.runtime == "rs" else ""
    return (f"kata config: {c.path} (handler {c.handler}{rt}), "
            f"cold_plug_vfio = {c.cold_plug_vfio}{via}")


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
        parts.append(f"invalid: {e.where()}: {e.message}{more}")
        return CheckResult("kata config", False, "; ".join(parts),
                           fix="fix the file Kata names (Kata itself refuses to start sandboxes with it)",
                           level="fail" if not configs else "warn")
    if not parts:
        return CheckResult("kata config", False, "no usable Kata configuration", level="warn")
    return CheckResult("kata config", True, "; ".join(parts))



def exposure_line(he_facts: tuple[ev.KataHandlerFacts, ...], assessments: tuple[kx.Assessment, ...],
                  config_errors: tuple[str, ...] = ()) -> CheckResult:
    """The `kata exposure` line from every handler's facts and assessment (pure)."""
    if he_facts and all(f.assumed for f in he_facts):
        return CheckResult("kata exposure", True, "no Kata installed: nothing to assess")
    if not he_facts and config_errors:
        return CheckResult("kata exposure", False, "not assessed: no handler has a configuration Kata "
                           "would load (the kata config line says why; Kata refuses every sandbox then)",
                           level="warn")
    facts = {f.handler: f for f in he_facts}
    exposed = [r for a in assessments for r in a.rows if r.exposed]
    latent = [r for a in assessments for r in a.rows if not r.exposed]
    if not exposed:
        parts = [f"{a.handler}: not exposed to a known Kata VFIO bug ("
                 + "; ".join(kx.version_and_config(facts[a.handler])) + ")"
                 for a in assessments if a.handler in facts]
        parts += [f"{r.handler} would be exposed to {_issue(r)} once a VF can be given to pods"
                  for r in latent]
        return CheckResult("kata exposure", True, "; ".join(parts) or "no Kata handler to assess")
    parts, fixes = [], []
    for r in sorted(exposed, key=lambda r: (-r.severity.rank, r.handler, r.issue)):
        f = facts[r.handler]
        parts.append(f"handler {r.handler} exposed to {_issue(r)} ({r.severity.label}): "
                     + "; ".join(r.why[:3]))
        fix = r.fix + (f" [{kx.dropin_line(r.dropin)}]" if r.dropin else "")
        fixes.append(f"{f.handler}: {fix}")
    worst = max(r.severity for r in exposed)
    return CheckResult("kata exposure", False, " | ".join(parts), fix=" | ".join(dict.fromkeys(fixes)),
                       level="fail" if worst >= ev.Severity.ERROR else "warn")


def _issue(r: kx.Exposure) -> str:
    return f"Kata #{r.issue}" if r.issue.isdigit() else "an unknown Kata version's bugs"


@check
def kata_exposure(paths: HostPaths) -> CheckResult:
    he = exposure_now(paths)
    if he is None:
        return CheckResult("kata exposure", False, "no Kata configuration read", level="warn")
    return exposure_line(he.facts, he.assessments, he.config_errors)


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
