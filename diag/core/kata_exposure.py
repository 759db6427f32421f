"""Provides Kata's version timeline and the exposure table: which known VFIO bug a handler will hit.

Pure: no I/O, no clock. Given one Kata runtime handler's facts (runtime, version and where it
was read, the effective `cold_plug_vfio` and its origin, the root ports, whether a pod may
change the value by annotation, and the VFs pods can be given), `assess` returns one row per
known issue the handler is exposed to, each with why, what the first VF pod will meet and the
fix. Every row names the facts it rests on and whether each is read in Kata's code [code], taken
from an issue or PR text [issue], or the agent's own reading of how code paths combine
[inference] (kata-facts §0, §1.3-1.5, §2.5, §6).

The timeline (Go runtime unless said):

- < 3.2: no `cold_plug_vfio` key (`hotplug_vfio_on_root_bus` era): not assessed.
- 3.2.x: a physical endpoint never gets a port, so attach fails with `port is not set` after
  the VF was moved to vfio-pci, whatever `cold_plug_vfio` says (#9014; fixed by PR #8552 in 3.3).
- 3.3-3.8: the port is `cold_plug_vfio`; with `no-port` QEMU fails on
  `Bus '<unknown PCIePortBusPrefix: >0' not found` after the move (#10162).
- >= 3.9: `no-port` is refused before any sysfs write (#10210): the pod never starts.
- >= 4.0: teardown may restore the VF before QEMU let go of it: the VF is left with no driver
  (#13837, open; PR #13856 proposed).
- runtime-rs (any version): no early refusal; a PCI-backed netdev is moved to vfio-pci whatever
  `cold_plug_vfio` says.
- Go >= 3.3 with `root-port` but no root port (`pcie_root_port = 0`): root ports are counted
  when the VM is created, before the network (and its VFs) is attached, so the VF's `rp0` bus
  does not exist (the failure of #5676/#6221) [inference].
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from diag import events as ev

NO_PORT = "no-port"
PORT_VALUES = ("no-port", "bridge-port", "root-port", "switch-port")
ANN_COLD = "io.katacontainers.config.hypervisor.cold_plug_vfio"
MAX_ROOT_PORTS = 16

ISSUE_URL = "https://github.com/kata-containers/kata-containers/issues/{}"

# ---- versions -------------------------------------------------------------------------------

_VERSION = re.compile(
    r"^v?(?P<major>\d{1,4})\.(?P<minor>\d{1,4})(?:\.(?P<patch>\d{1,4}))?"
    r"(?:[-~](?P<pre>(?:alpha|beta|rc)\.?\d*))?"
    r"(?:-(?P<ahead>\d+)-g(?P<sha>[0-9a-f]{6,40}))?"
    r"(?P<rest>[-+~.][0-9A-Za-z.+~-]*)?$"
)


@dataclass(frozen=True, slots=True, order=True)
class KataVersion:
    """A Kata release number, ordered: 3.2.0-alpha1 < 3.2.0 < 3.2.0-5-gabc (git describe) < 3.3.0."""

    major: int
    minor: int
    patch: int
    pre_rank: int = 1
    """0 for a pre-release (alpha, beta, rc), 1 for the release itself."""
    ahead: int = 0
    """Commits after the tag (`git describe`: 3.8.0-12-gabcdef0)."""
    text: str = field(default="", compare=False)
    pre: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor}.{self.patch}"

    @property
    def line(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        """True when this version contains a change first released in major.minor.patch."""
        if self.pre_rank == 0:  # a pre-release of X.Y.Z: judged as the release before it
            return (self.major, self.minor, self.patch) > (major, minor, patch)
        return (self.major, self.minor, self.patch) >= (major, minor, patch)

    @property
    def notes(self) -> tuple[str, ...]:
        out = []
        if self.pre_rank == 0:
            out.append(f"{self} is a pre-release: judged as the release before {self.major}."
                       f"{self.minor}.{self.patch} (it may already carry some of its changes)")
        if self.ahead:
            out.append(f"{self} is a build {self.ahead} commits after a release: judged as that "
                       "release (it may already carry later fixes)")
        return tuple(out)


def parse_version(text: str) -> KataVersion | None:
    """A Kata version from `3.8.0`, `v3.8.0`, `3.2.0-rc0`, `3.8.0~rc1`, `3.8.0-12-gabcdef0`;
    None when the text is not one (an empty string, `@VERSION@`, a commit)."""
    t = text.strip()
    m = _VERSION.match(t)
    if m is None:
        return None
    pre = m.group("pre") or ""
    ahead = int(m.group("ahead") or 0)
    return KataVersion(int(m.group("major")), int(m.group("minor")), int(m.group("patch") or 0),
                       pre_rank=0 if pre else 1, ahead=ahead, text=t, pre=pre)


def upstream_of_package_version(version: str) -> str:
    """The upstream part of a dpkg or rpm version: no epoch, no Debian revision, `~` kept.

    `1:3.8.0-1` -> `3.8.0`; `3.8.0~rc1-2ubuntu1` -> `3.8.0~rc1`;
    `1.3.0~rc1+git.22aedc4-49` -> `1.3.0~rc1`.
    """
    v = version.strip()
    if ":" in v.split("-", 1)[0]:
        v = v.split(":", 1)[1]
    if "-" in v:
        v = v.rsplit("-", 1)[0]
    return v.split("+", 1)[0]


# ---- the facts about one handler ------------------------------------------------------------


VersionReading = ev.KataVersionReading
VfCandidate = ev.VfCandidate
HandlerFacts = ev.KataHandlerFacts
"""The facts are event records (`ev.KataFactsObserved` carries them to the core and the journal)."""


NOT_IN_REPORT = "default (not in the report)"
"""cold_plug_origin of facts read from a text that showed no configuration (`--version` output)."""


def with_config(f: HandlerFacts, cfg: ev.KataConfig, *, annotation_enabled: bool) -> HandlerFacts:
    """`f` with the handler name and VFIO settings of an effective configuration."""
    def origin(key: str) -> str:
        return next((s.origin for s in cfg.settings if s.key == key), "default")

    return ev.replace(f, handler=cfg.handler, runtime="rs" if cfg.runtime == "rs" else f.runtime,
                   config_path=cfg.path, cold_plug_vfio=cfg.cold_plug_vfio or NO_PORT,
                   cold_plug_origin=origin("cold_plug_vfio"), hot_plug_vfio=cfg.hot_plug_vfio,
                   pcie_root_port=cfg.pcie_root_port, pcie_root_port_origin=origin("pcie_root_port"),
                   hypervisor=cfg.hypervisor, annotation_enabled=annotation_enabled)


def with_vfs(f: HandlerFacts, vfs: tuple[VfCandidate, ...], basis: str) -> HandlerFacts:
    """`f` with the VFs pods can be given (now known)."""
    return ev.replace(f, vfs=vfs, vfs_basis=basis, vfs_known=True)


def handler_version(f: HandlerFacts) -> KataVersion | None:
    """The handler's Kata version, parsed; None when unknown or not a version."""
    return parse_version(f.version) if f.version else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    """One statement an exposure rests on, with its kind of evidence."""

    text: str
    basis: Literal["code", "issue", "inference"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Exposure:
    """One known issue a handler is exposed to (or would be, with VFs)."""

    handler: str
    issue: str
    """Kata issue number (`10162`), or `unknown-version`."""
    severity: ev.Severity
    exposed: bool
    """False when everything but the VFs is there (latent: no VF pods could be given now)."""
    title: str
    why: tuple[str, ...]
    first_pod: str
    """What will happen to the first pod given a VF."""
    fix: str
    dropin: str = ""
    """The exact configuration drop-in to write (path + content), empty when none helps."""
    facts: tuple[Fact, ...] = ()
    inference: bool = False
    """True when the row rests on at least one [inference]."""

    @property
    def url(self) -> str:
        return ISSUE_URL.format(self.issue) if self.issue.isdigit() else ""

    @property
    def summary(self) -> str:
        state = "exposed to" if self.exposed else "would be exposed (no VF pods can be given now) to"
        what = f"Kata #{self.issue}" if self.issue.isdigit() else "an unknown Kata version's bugs"
        return f"handler {self.handler} {state} {what}: {self.title}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    """The exposure rows of one handler, and what could not be assessed."""

    handler: str
    rows: tuple[Exposure, ...] = ()
    notes: tuple[str, ...] = ()


# ---- the table ------------------------------------------------------------------------------


def _version_why(f: HandlerFacts) -> str:
    if handler_version(f) is None:
        tried = "; ".join(r.detail for r in f.readings) or "no source found"
        return f"Kata version unknown ({tried})"
    src = f.version_source
    return f"Kata {f.version} ({'runtime-rs' if f.runtime == 'rs' else 'Go runtime'}), read from " \
           f"{src.detail if src else 'an unnamed source'}"


def _cold_why(f: HandlerFacts) -> str:
    return f"cold_plug_vfio = {f.cold_plug_vfio!r} ({f.cold_plug_origin})" + (
        f", pcie_root_port = {f.pcie_root_port} ({f.pcie_root_port_origin})" if f.cold_plug_vfio != NO_PORT else "")


def _vf_why(f: HandlerFacts) -> str:
    if not f.vfs and not f.vfs_known:
        return f"which VFs pods can be given is not known ({f.vfs_basis or 'no inventory'}): judged as if one can"
    if not f.vfs:
        return f"no VF pods could be given now ({f.vfs_basis or 'none found'})"
    names = ", ".join(v.bdf + (f" ({v.netdevs[0]})" if v.netdevs else "") for v in f.vfs[:6])
    more = f" and {len(f.vfs) - 6} more" if len(f.vfs) > 6 else ""
    return f"{len(f.vfs)} VF(s) pods can be given: {names}{more} ({f.vfs_basis})"


def version_and_config(f: HandlerFacts) -> tuple[str, str]:
    """The version (and where it was read) and the effective cold_plug_vfio (and its origin), in words."""
    return _version_why(f), _cold_why(f)


def dropin_path(config_path: str | None, name: str = "90-vfiowatch-vfio-cold-plug.toml") -> str:
    """Where Kata reads a drop-in for this handler: `config.d/` beside its main file."""
    base = config_path.rsplit("/", 1)[0] if config_path and "/" in config_path else \
        "/etc/kata-containers"
    return f"{base}/config.d/{name}"


def dropin_line(dropin: str) -> str:
    """A drop-in on one line: `write <path>: [table] key = value; key = value` (comments dropped)."""
    lines = dropin.splitlines()
    path = lines[0].removeprefix("#").strip() if lines and lines[0].startswith("#") else ""
    body = [x.split("#", 1)[0].strip() for x in lines[1 if path else 0:]]
    table = next((x for x in body if x.startswith("[")), "")
    keys = "; ".join(x for x in body if x and not x.startswith("["))
    return " ".join(x for x in (f"write {path}:" if path else "write:", table, keys) if x)


def root_port_dropin(f: HandlerFacts) -> str:
    """The drop-in that enables cold plug on root ports for physical endpoints, for this handler."""
    ports = max(1, min(f.pcie_root_port, MAX_ROOT_PORTS))
    lines = [f"# {dropin_path(f.config_path)}",
             f"[hypervisor.{f.hypervisor or 'qemu'}]",
             'cold_plug_vfio = "root-port"',
             f"pcie_root_port = {ports}   # one per VF a pod is given (at most {MAX_ROOT_PORTS})"]
    if f.hot_plug_vfio not in (NO_PORT, ""):
        lines.append('hot_plug_vfio = "no-port"   # Kata refuses both set')
    return "\n".join(lines) + "\n"


def _pods_annotated(f: HandlerFacts) -> str:
    if not f.annotation_enabled:
        return ""
    if f.runtime == "rs":
        return (f" A pod annotation {ANN_COLD} is allowed by enable_annotations, but runtime-rs has "
                "no handler for it at Kata's HEAD [code]: it does not help.")
    return (f" Pods annotated {ANN_COLD}=root-port are not exposed (enable_annotations allows it); "
            "every other pod is.")


F_PORT_NOT_SET = Fact(text="3.2.x physical endpoints set no port: attach fails with 'port is not set' "
                           "after the VF was moved to vfio-pci (vfio.go @3.2.0; #9014; PR #8552 fixed it "
                           "in 3.3.0)", basis="code")
F_NO_PORT_BUS = Fact(text="3.3-3.8: the physical endpoint's port is cold_plug_vfio; with no-port QEMU "
                          "fails on Bus '<unknown PCIePortBusPrefix: >0' after the VF was moved "
                          "(physical_endpoint.go; #10162)", basis="code")
F_REFUSAL = Fact(text=">= 3.9: addSingleEndpoint refuses a physical endpoint when cold_plug_vfio is "
                      "no-port, before any sysfs write (PR #10210, network_linux.go)", basis="code")
F_RS_NO_CHECK = Fact(text="runtime-rs creates a physical endpoint for any PCI-backed netdev whatever "
                          "cold_plug_vfio says; it has no early refusal (network_with_netns.rs)",
                     basis="code")
F_RS_FAILS = Fact(text="runtime-rs with no-port then fails to give the VM the moved VF, the same "
                       "failure class as #10162", basis="inference")
F_ROLLBACK = Fact(text="Kata's rollback restores only endpoints already listed; a VF moved by a failed "
                       "attach stays on vfio-pci (PR #13790; ovn-kubernetes #6387)", basis="issue")
F_TEARDOWN = Fact(text=">= 4.0 (d3291b8778): teardown may start restoring the VF before QEMU released "
                       "it; the unbind stalls, drivers_probe never runs, the VF is left with no driver "
                       "(#13837, open; PR #13856 proposed)", basis="issue")
F_ROOT_PORTS = Fact(text="root ports are created with the VM (createPCIeTopology counts pcie_root_port "
                         "and the VFIO devices known then), before the network's VFs are attached "
                         "(newSandbox -> CreateVM precedes createNetwork)", basis="code")
F_RP0 = Fact(text="so with cold_plug_vfio = root-port and pcie_root_port = 0 the VF's bus rp0 does not "
                  "exist and QEMU fails after the VF was moved (Bus 'rp0' not found: #5676, #6221)",
             basis="inference")


def assess(f: HandlerFacts) -> Assessment:
    """The exposure rows of one handler: the table of this module's docstring, row by row."""
    if f.assumed:
        return Assessment(handler=f.handler, notes=("no Kata installed: nothing to assess",))
    v = handler_version(f)
    notes: list[str] = list(v.notes) if v else []
    rows: list[Exposure] = []
    exposed = bool(f.vfs) or not f.vfs_known
    cold = f.cold_plug_vfio or NO_PORT
    base_why = (_version_why(f), _cold_why(f), _vf_why(f))
    if f.runtime == "go" and f.hypervisor not in ("qemu", ""):
        notes.append(f"hypervisor {f.hypervisor}: the known VF failures are QEMU's; not assessed")
        return Assessment(handler=f.handler, notes=tuple(notes))

    def row(issue: str, sev: ev.Severity, title: str, first_pod: str, fix: str, facts: tuple[Fact, ...],
            dropin: str = "", extra: tuple[str, ...] = ()) -> None:
        rows.append(Exposure(
            handler=f.handler, issue=issue, severity=sev, exposed=exposed, title=title,
            why=base_why + extra, first_pod=first_pod, fix=fix, dropin=dropin, facts=facts,
            inference=any(x.basis == "inference" for x in facts)))

    lose = ("the VF leaves its network driver for vfio-pci (its netdev vanishes from the pod's "
            "namespace), then the pod fails; the VF may stay on vfio-pci with no network")
    if f.runtime == "rs":
        if cold == NO_PORT:
            row("10162", ev.Severity.ERROR, "runtime-rs moves the VF to vfio-pci with cold_plug_vfio = "
                "no-port, and has no early refusal",
                "Kata runtime-rs unbinds the VF from its network driver and binds it to vfio-pci whatever "
                "cold_plug_vfio says; with no-port the VM cannot take it: " + lose + "." + _pods_annotated(f),
                "Give runtime-rs cold plug on a root port (the suggested drop-in), or run the VF pods with the Go "
                "runtime >= 3.9, which refuses such pods before touching the VF.",
                (F_RS_NO_CHECK, F_RS_FAILS, F_ROLLBACK), dropin=root_port_dropin(f))
        return Assessment(handler=f.handler, rows=tuple(rows), notes=tuple(notes))

    if v is None:
        risk = []
        if cold == NO_PORT:
            risk = ["3.2.x (#9014: VF stranded on vfio-pci)", "3.3-3.8 (#10162: VF moved, QEMU fails)",
                    ">= 3.9 (#10210: the pod is refused, the VF untouched)"]
        else:
            risk = ["3.2.x (#9014: VF stranded on vfio-pci, whatever cold_plug_vfio says)",
                    ">= 4.0 (#13837: teardown may leave the VF with no driver)"]
            if cold == "root-port" and f.pcie_root_port == 0:
                risk.append(">= 3.3 with pcie_root_port = 0 (Bus 'rp0' not found after the move)")
        row("unknown-version", ev.Severity.WARNING,
            "Kata version unknown: exposure depends on it",
            "depends on the version: " + "; ".join(risk) + ".",
            "Let the agent read the version (it reads the shim binary, the package database, "
            "<prefix>/VERSION of kata-deploy and Kata's log lines), or check by hand with "
            "`containerd-shim-kata-v2 --version`; then apply the fix for that version"
            + (" (for 3.3-3.8: the suggested drop-in; better, Kata >= 3.9)." if cold == NO_PORT else "."),
            (F_PORT_NOT_SET, F_NO_PORT_BUS, F_REFUSAL, F_TEARDOWN),
            dropin=root_port_dropin(f) if cold == NO_PORT else "",
            extra=("versions at risk: " + "; ".join(risk),))
        return Assessment(handler=f.handler, rows=tuple(rows), notes=tuple(notes))

    if not v.at_least(3, 2):
        notes.append(f"Kata {v} predates cold_plug_vfio (3.2.0): not assessed")
        return Assessment(handler=f.handler, notes=tuple(notes))

    if not v.at_least(3, 3):
        row("9014", ev.Severity.ERROR, f"Kata {v} never sets a port for a physical endpoint: the VF is "
            "stranded on vfio-pci",
            "Kata moves the VF to vfio-pci, then fails with 'cold_plug_vfio= or hot_plug_vfio= port is "
            "not set for device <BDF>' whatever cold_plug_vfio says; the endpoint was never listed, so "
            "nothing gives the VF back: it stays on vfio-pci with no network.",
            "Upgrade Kata: 3.3.0 sets the port (PR #8552); >= 3.9 with cold_plug_vfio = no-port refuses "
            "VF pods before touching the VF, and with root-port (the suggested drop-in) runs them. No "
            "configuration fixes 3.2.",
            (F_PORT_NOT_SET, F_ROLLBACK))
        return Assessment(handler=f.handler, rows=tuple(rows), notes=tuple(notes))

    if cold == NO_PORT and not v.at_least(3, 9):
        row("10162", ev.Severity.ERROR, f"Kata {v} moves the VF to vfio-pci with cold_plug_vfio = "
            "no-port, then QEMU fails",
            "Kata unbinds the VF from its network driver and binds it to vfio-pci, then QEMU exits with "
            "\"Bus '<unknown PCIePortBusPrefix: >0' not found\": " + lose + "." + _pods_annotated(f),
            "Write the suggested drop-in (cold plug on a root port), or upgrade to Kata >= 3.9, which "
            "refuses such pods before touching the VF (PR #10210).",
            (F_NO_PORT_BUS, F_ROLLBACK, F_ROOT_PORTS), dropin=root_port_dropin(f))
    elif cold == NO_PORT:
        row("10210", ev.Severity.WARNING, f"Kata {v} refuses pods given a VF while cold_plug_vfio = "
            "no-port",
            "Pod creation fails with 'unable to add PhysicalEndpoint <iface> because cold_plug_vfio is "
            "disabled' before any sysfs write: the VF keeps its driver and network, the pod never "
            "starts." + _pods_annotated(f),
            "Write the suggested drop-in to run VF pods (cold plug on a root port).",
            (F_REFUSAL,), dropin=root_port_dropin(f))
    if cold == "root-port" and f.pcie_root_port == 0:
        row("5676", ev.Severity.ERROR, f"Kata {v} cold-plugs VFs on root ports but creates none "
            "(pcie_root_port = 0)",
            "Kata moves the VF to vfio-pci, then QEMU exits with \"Bus 'rp0' not found\": " + lose + ".",
            "Set pcie_root_port to the number of VFs a pod is given (the suggested drop-in).",
            (F_ROOT_PORTS, F_RP0, F_ROLLBACK), dropin=root_port_dropin(f))
    if cold != NO_PORT and v.at_least(4, 0):
        row("13837", ev.Severity.ERROR, f"Kata {v}'s teardown may leave a VF with no driver",
            "The pod runs; when it stops, Kata may restore the VF while QEMU still holds it: the unbind "
            "stalls, drivers_probe never runs, and the VF is left unbound (driver_override names its "
            "driver) with no network until someone probes it.",
            "No release fixes it yet (PR #13856 proposed); after a VF pod stops, watch for "
            "vf-stuck-unbound and give the VF back with `echo <bdf> > /sys/bus/pci/drivers_probe`.",
            (F_TEARDOWN,))
    if f.annotation_enabled and cold == NO_PORT and v.at_least(4, 0):
        row("13837", ev.Severity.ERROR, f"Kata {v}'s teardown may leave a VF with no driver "
            "(pods annotated cold_plug_vfio=root-port)",
            "Pods annotated " + ANN_COLD + "=root-port run; when one stops, Kata may restore the VF "
            "while QEMU still holds it: the VF is left unbound with no network.",
            "No release fixes it yet (PR #13856 proposed); watch for vf-stuck-unbound.",
            (F_TEARDOWN,))
    return Assessment(handler=f.handler, rows=tuple(rows), notes=tuple(notes))


# ---- what happened (postmortem) -------------------------------------------------------------

LINE_ISSUES = (
    # (signature id of diag.sources.kata.signatures, text that must appear, issue)
    ("qemu-bus-not-found", "<unknown PCIePortBusPrefix", "10162"),
    ("qemu-bus-not-found", "Bus 'rp", "5676"),
    ("port-not-set", "", "9014"),
    ("coldplug-disabled-refusal", "", "10210"),
    ("rs-bind-to-vfio-failed", "", "10162"),
    ("vfio-device-request", "", "13837"),
    ("vfio-device-request-blocked", "", "13837"),
)
"""Which known issue a matched Kata/QEMU/kernel line is the symptom of."""


def issue_of_line(signature: str, text: str) -> str | None:
    """The known issue a catalogued log line shows, or None."""
    return next((issue for sig, needle, issue in LINE_ISSUES if sig == signature and needle in text), None)


def what_happened(a: Assessment, lines: Iterable[tuple[str, str]]) -> tuple[tuple[Exposure, str, str], ...]:
    """(exposure row, signature, line) for each line that shows an issue the handler was exposed to."""
    out = []
    for sig, text in lines:
        issue = issue_of_line(sig, text)
        for row in a.rows:
            if issue is not None and row.issue == issue:
                out.append((row, sig, text))
    return tuple(out)
