"""Provides the preflight of `vfiowatch check`: what this host lets the agent watch, with fixes.

Each check is a function registered with `@check` (its name is the registry key) that returns
a CheckResult (ok, detail, fix, and whether failing it stops the agent entirely). CHECKS lists
the modules holding checks, one line each: the host-wide ones here, then each source's own
(`diag/sources/<source>/preflight.py`); the list order is the order shown. Checks only read:
they never change the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diag.common import caps
from diag.common import needs as needs_mod
from diag.common.needs import NEEDS
from diag.common.paths import HostPaths, OutsideRoot
from diag.common.registry import Registry

NETLINK_KOBJECT_UEVENT = 15
NETLINK_ROUTE = 0
SO_RCVBUFFORCE = 33


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One preflight line."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    fatal: bool = False
    """When failing this check means the agent cannot run at all."""
    level: str = ""
    """`ok`, `fail` or `warn` (degraded but fine); derived from ok when empty."""

    @property
    def status(self) -> str:
        return self.level or ("ok" if self.ok else "fail")


CheckFn = Callable[[HostPaths], CheckResult]
CHECKS: Registry[CheckFn] = Registry("check", [
    "diag.sources.preflight",
    "diag.sources.kata.preflight",
    "diag.sources.ebpf.preflight",
])
"""Check name -> check, in the order shown; one line per module of checks."""


def check(fn: CheckFn) -> CheckFn:
    """Register a preflight check under its function's name (leading underscores dropped)."""
    return CHECKS.add(fn.__name__.lstrip("_"), fn)


KERNEL_CONFIG_LIMIT = 64 << 20
"""A kernel configuration is about 300 KB; more than this (read or inflated) is not read."""


def read_kernel_config(paths: HostPaths, host_path: str) -> str:
    """A kernel configuration file under the root (`.gz` inflated), bounded; OSError if unreadable."""
    raw = paths.read_bytes(host_path, KERNEL_CONFIG_LIMIT, regular=True)
    if host_path.endswith(".gz"):
        try:
            d = zlib.decompressobj(wbits=31)
            raw = d.decompress(raw, KERNEL_CONFIG_LIMIT)
        except zlib.error as exc:
            raise OSError(errno.EINVAL, f"{host_path}: {exc}") from None
    return raw.decode("utf-8", "replace")


def kernel_config(paths: HostPaths) -> dict[str, str]:
    """The running kernel's configuration (`/proc/config.gz`, else `/boot/config-<release>`):
    `CONFIG_X` -> its value, `n` for one not set; empty when neither is readable."""
    cfg: dict[str, str] = {}
    release = platform.release()
    for p in ("/proc/config.gz", f"/boot/config-{release}"):
        try:
            text = read_kernel_config(paths, p)
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("CONFIG_"):
                k, _, v = line.partition("=")
                cfg[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                cfg[line[2:].split()[0]] = "n"
        break
    return cfg


def tracefs_dir(paths: HostPaths) -> str | None:
    """The mounted tracefs (host path `/sys/kernel/tracing`, or debugfs's `tracing`), or None."""
    for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if paths.is_dir(f"{p}/events"):
            return p
    return None


def tracefs_denied(paths: HostPaths) -> str | None:
    """The tracefs directory that exists but this process may not read (tracefs is mode 0700
    root), or None: "not mounted" would be the wrong diagnosis there."""
    for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            paths.stat(f"{p}/events")
        except PermissionError:
            return p
        except OSError:
            continue
    return None


def _no_tracefs(paths: HostPaths, name: str, prefix: str = "") -> CheckResult:
    denied = tracefs_denied(paths)
    if denied is not None:
        return CheckResult(name, False, f"{prefix}{denied} exists but is not readable by uid "
                                        f"{os.geteuid()} (tracefs is root's, mode 0700)",
                           fix="run the agent as root (its capabilities can still be limited)",
                           level="warn")
    return CheckResult(name, False, f"{prefix}tracefs is not mounted",
                       fix="mount -t tracefs nodev /sys/kernel/tracing", level="warn")


@check
def _privileges(paths: HostPaths) -> CheckResult:
    """Judged by the effective capability set (uid 0 may have dropped some; another uid may
    hold some), against NEEDS: what each part lacks and what it costs there."""
    have = caps.effective()
    uid = os.geteuid()
    who = "root" if uid == 0 else f"uid {uid}"
    if not have.known:
        return CheckResult("privileges", False,
                           f"running as {who}; /proc/self/status unreadable: capabilities unknown",
                           fix="mount /proc", level="warn")
    gaps = [(n.part, caps.missing(n.part, have)) for n in NEEDS]
    gaps = [(part, m) for part, m in gaps if m]
    if not gaps:
        held = "all capabilities" if have.full else (
            "the capabilities every source needs: " + ", ".join(
                f"CAP_{c}" for c in sorted(needs_mod.capabilities()) if have.has(c)))
        return CheckResult("privileges", True, f"running as {who} with {held}")
    lacking: dict[str, tuple[str, str]] = {}
    parts_of: dict[str, list[str]] = {}
    for part, m in gaps:
        for c, why in m:
            lacking.setdefault(c, (c, why))
            parts_of.setdefault(c, []).append(part)
    detail = f"running as {who} without " + ", ".join(
        f"CAP_{c} ({', '.join(parts)})" for c, parts in parts_of.items())
    return CheckResult("privileges", False, detail, fix=caps.grant_hint(list(lacking.values())),
                       level="warn")


@check
def _sysfs(paths: HostPaths) -> CheckResult:
    if paths.is_dir("/sys/bus/pci/devices"):
        n = len(paths.listdir("/sys/bus/pci/devices"))
        return CheckResult("pci sysfs", True, f"{paths.pci_devices}: {n} PCI devices")
    return CheckResult(
        "pci sysfs", False, f"{paths.pci_devices} does not exist",
        fix="mount sysfs (mount -t sysfs sysfs /sys) or pass --root the host's root", fatal=True,
    )


@check
def _bcc(paths: HostPaths) -> CheckResult:
    from diag.sources.ebpf import bcc_facade  # the only importer of bcc

    err = bcc_facade.import_error()
    if err is not None:
        return CheckResult(
            "bcc", False, f"python module bcc not importable ({err})",
            fix="apt-get install python3-bpfcc and make the venv with --system-site-packages",
            level="warn",
        )
    return CheckResult("bcc", True, f"bcc importable {bcc_facade.version()}".strip())


@check
def _headers(paths: HostPaths) -> CheckResult:
    release = platform.release()
    build = f"/lib/modules/{release}/build"
    try:
        target = paths.resolve(build)
    except OSError as exc:
        why = str(exc) if isinstance(exc, OutsideRoot) else "missing"
        return CheckResult(
            "kernel headers", False, f"{paths.host(build)} {why}: bcc cannot compile probes",
            fix=f"apt-get install linux-headers-{release} (or run deploy/setup-host.sh)",
            level="warn",
        )
    hdr_release = ""
    with contextlib.suppress(OSError, IndexError):
        hdr_release = paths.read_text(f"{target}/include/generated/utsrelease.h", 65536,
                                      regular=True).split('"')[1]
    build = str(paths.host(build))
    if hdr_release and hdr_release != release:
        return CheckResult(
            "kernel headers", True,
            f"{build} -> headers of {hdr_release}, not {release}: usable, probes read no kernel structs",
            level="ok",
        )
    return CheckResult("kernel headers", True, f"{build} -> {target}")


@check
def _tracefs(paths: HostPaths) -> CheckResult:
    t = tracefs_dir(paths)
    if t is not None:
        return CheckResult("tracefs", True, f"mounted at {t}")
    return _no_tracefs(paths, "tracefs")


@check
def _kprobes(paths: HostPaths) -> CheckResult:
    if paths.exists("/sys/bus/event_source/devices/kprobe"):
        return CheckResult("kprobes", True, "kprobe PMU present: eBPF uses kprobe mode")
    cfg = kernel_config(paths)
    why = "CONFIG_KPROBES is not set in this kernel" if cfg.get("CONFIG_KPROBES") == "n" else (
        "no kprobe PMU (/sys/bus/event_source/devices/kprobe)"
    )
    return CheckResult(
        "kprobes", False, f"{why}: eBPF falls back to syscall tracepoints",
        fix="use a kernel with CONFIG_KPROBES=y for zero-overhead attribution (optional)",
        level="warn",
    )


@check
def _tracepoints(paths: HostPaths) -> CheckResult:
    t = tracefs_dir(paths)
    if t is None:
        return _no_tracefs(paths, "syscall tracepoints", "unknown: ")
    needed = ["sys_enter_openat", "sys_exit_openat", "sys_enter_write", "sys_exit_write"]
    missing = [n for n in needed if not paths.is_dir(f"{t}/events/syscalls/{n}")]
    if missing:
        return CheckResult(
            "syscall tracepoints", False, "missing: " + ", ".join(missing),
            fix="use a kernel with CONFIG_FTRACE_SYSCALLS=y", level="warn",
        )
    return CheckResult("syscall tracepoints", True, "openat/write enter+exit available")


def _netlink_bound(name: str, proto: int, what: str, bound: str, fix: str) -> CheckResult:
    """Whether this process may bind group 1 of a netlink protocol (the sources must), and
    whether it may force the large receive buffer the sources ask for (CAP_NET_ADMIN)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
    try:
        s.bind((0, 1))
    except OSError as exc:
        return CheckResult(name, False, f"cannot bind {what}: {os.strerror(exc.errno or errno.EPERM)}",
                           fix=fix, level="warn")
    else:
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 20)
            forced = True
        except OSError:
            forced = False
    finally:
        s.close()
    if not forced:
        rmem = "?"
        with contextlib.suppress(OSError, ValueError):
            rmem = f"{int(Path('/proc/sys/net/core/rmem_max').read_text()):,}"
        return CheckResult(
            name, False,
            f"{bound}, but without CAP_NET_ADMIN its receive buffer is capped by "
            f"net.core.rmem_max ({rmem} bytes): a burst beyond it is lost, counted and resynced",
            fix=caps.grant_hint([("NET_ADMIN", "")]) + "; or raise net.core.rmem_max",
            level="warn")
    return CheckResult(name, True, bound)


@check
def _uevent(paths: HostPaths) -> CheckResult:
    return _netlink_bound(
        "uevent socket", NETLINK_KOBJECT_UEVENT, "NETLINK_KOBJECT_UEVENT group 1",
        "kernel uevent group bound",
        "run in the host's network namespace (hostNetwork: true) without a user namespace")


@check
def _rtnetlink(paths: HostPaths) -> CheckResult:
    return _netlink_bound("rtnetlink", NETLINK_ROUTE, "NETLINK_ROUTE", "RTNLGRP_LINK bound",
                          "grant CAP_NET_ADMIN")


IOMMU_SWITCHES = ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough")
"""Kernel command-line parameters that turn the IOMMU on, off or to passthrough."""


def kernel_cmdline(paths: HostPaths) -> list[str] | None:
    """The words of the kernel command line (`/proc/cmdline`), or None when unreadable."""
    try:
        return paths.read_text("/proc/cmdline", 65536).split()
    except OSError:
        return None


def _iommu_words(words: list[str] | None) -> str:
    """The IOMMU parameters on the command line, said for a person."""
    if words is None:
        return "kernel command line unreadable"
    found = [w for w in words if w.split("=", 1)[0] in IOMMU_SWITCHES]
    if not found:
        return "none on the kernel command line (the kernel's built-in default)"
    return "kernel command line: " + " ".join(found)


@check
def _iommu(paths: HostPaths) -> CheckResult:
    """On, with groups: what VFIO needs. A missing IOMMU is a failure (VF pods cannot run),
    though the agent itself runs."""
    units = sorted(paths.listdir("/sys/class/iommu")) if paths.is_dir("/sys/class/iommu") else []
    groups = (sum(1 for g in paths.listdir("/sys/kernel/iommu_groups") if g.isdigit())
              if paths.is_dir("/sys/kernel/iommu_groups") else 0)
    words = kernel_cmdline(paths)
    said = _iommu_words(words)
    if groups:
        return CheckResult("iommu", True, f"on: {', '.join(units) or 'unit not listed'}, "
                                          f"{groups} IOMMU groups; {said}")
    off = [w for w in words or () if w in ("intel_iommu=off", "amd_iommu=off", "iommu=off")]
    fix = (f"remove {' '.join(off)} from the kernel command line" if off else
           "boot with intel_iommu=on iommu=pt (AMD: amd_iommu=on iommu=pt) and turn VT-d / "
           "AMD-Vi on in the firmware")
    return CheckResult(
        "iommu", False, f"off: no IOMMU groups (/sys/kernel/iommu_groups is empty"
                        f"{'' if units else ', /sys/class/iommu too'}); {said}: vfio-pci "
                        "cannot pass VFs through, Kata VF pods fail",
        fix=fix + ", if this host runs VF pods", level="fail",
    )


@check
def _vfio_modules(paths: HostPaths) -> CheckResult:
    """vfio and vfio-pci present (loaded or built in): Kata binds VFs to vfio-pci and never
    loads it; without it the bind fails and the VF is left without a driver."""
    have, missing = [], []
    for name, module, present in (
        ("vfio", "vfio", paths.exists("/sys/module/vfio") or paths.exists("/dev/vfio/vfio")),
        ("vfio-pci", "vfio_pci", paths.is_dir("/sys/bus/pci/drivers/vfio-pci")),
    ):
        if not present:
            missing.append(name)
        else:
            how = ("module" if paths.exists(f"/sys/module/{module}/initstate") else
                   "built in" if paths.exists(f"/sys/module/{module}") else "present")
            have.append(f"{name} ({how})")
    if not missing:
        return CheckResult("vfio modules", True, ", ".join(have))
    return CheckResult(
        "vfio modules", False, f"not loaded: {', '.join(missing)}"
        + (f" (loaded: {', '.join(have)})" if have else "") + ": Kata cannot bind VFs to vfio-pci",
        fix="modprobe vfio-pci, and load it at boot: echo vfio-pci > /etc/modules-load.d/vfio-pci.conf",
        level="fail",
    )


@check
def _sriov(paths: HostPaths) -> CheckResult:
    """The SR-IOV physical functions with their VFs enabled / possible, driver and netdev."""
    from diag.sources import sysfs

    pfs = [d for d in sysfs.scan(paths) if d.role == "pf"]
    if not pfs:
        return CheckResult("sr-iov", False, "no SR-IOV physical function on this host: no VF to watch",
                           fix="expected on a host without SR-IOV NICs; otherwise turn SR-IOV on "
                               "in the firmware and load the PF's driver", level="warn")
    parts = []
    for d in pfs:
        what = ", ".join(x for x in (d.driver or "no driver", *d.netdevs) if x)
        parts.append(f"{d.bdf} ({what}) {d.sriov_numvfs}/{d.sriov_totalvfs} VFs")
    detail = f"{len(pfs)} PF{'s' if len(pfs) > 1 else ''}: " + "; ".join(parts)
    if all(not d.sriov_numvfs for d in pfs):
        return CheckResult("sr-iov", False, detail + ": no VF enabled",
                           fix=f"echo N > /sys/bus/pci/devices/{pfs[0].bdf}/sriov_numvfs (or your "
                               "SR-IOV operator's policy)", level="warn")
    return CheckResult("sr-iov", True, detail)


def run_checks(paths: HostPaths) -> list[CheckResult]:
    """Run every registered check; a crashing check becomes a failed line, never an exception."""
    out = []
    for key, fn in CHECKS.load().items():
        try:
            out.append(fn(paths))
        except PermissionError as exc:  # named, with the privilege that would let it look
            what = f" {exc.filename}" if exc.filename else ""
            out.append(CheckResult(key.replace("_", " "), False,
                                   f"not permitted to read{what} as uid {os.geteuid()} "
                                   f"({exc.strerror or exc}): cannot tell",
                                   fix="run the check as root (or with CAP_DAC_READ_SEARCH)",
                                   level="warn"))
        except Exception as exc:  # a preflight must always finish
            out.append(CheckResult(key.replace("_", " "), False, f"check crashed: {exc!r}",
                                   level="warn"))
    if paths.confined:
        out.append(_confinement(paths))
    return out


def _confinement(paths: HostPaths) -> CheckResult:
    """Whether every read of the checks stayed inside --root; the refused paths when not."""
    refused = paths.refusals.all()
    if not refused:
        return CheckResult("root confinement", True, f"every read stayed inside {paths.root}")
    shown = "; ".join(refused[:5]) + (f" (+{len(refused) - 5} more)" if len(refused) > 5 else "")
    return CheckResult(
        "root confinement", False, f"{len(refused)} paths refused, they lead outside --root: {shown}",
        fix="these links point outside the tree; copy the host without them, or fix them to "
            "relative links inside it", level="warn",
    )
