"""Provides the eBPF source's mode choice: what the running kernel offers, and the mode that follows.

Like bcc-tools, ask the kernel what exists before attaching: `gather_facts` reads it (kprobe
PMU, the store handlers in kallsyms, CONFIG_KPROBES, tracefs and its syscall tracepoints, bcc
and the headers), `choose_mode` is pure: kprobe mode when the essential store handlers can be
probed, else tracepoint mode (in its open-only or complete variant), else unavailable with the
reason and the fix. `vfiowatch check` shows the same choice (`diag.sources.ebpf.preflight`).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from diag.common import caps
from diag.common.paths import HostPaths
from diag.sources.ebpf import bcc_facade
from diag.sources.preflight import kernel_config

MODES = ("auto", "kprobe", "tracepoint")
KPROBE_HANDLERS: dict[str, str] = {
    "bind_store": "kp_bind_store",
    "unbind_store": "kp_unbind_store",
    "new_id_store": "kp_new_id_store",
    "remove_id_store": "kp_remove_id_store",
    "drivers_probe_store": "kp_drivers_probe_store",
    "rescan_store": "kp_rescan_store",
    "driver_override_store": "kp_driver_override_store",
    "remove_store": "kp_remove_store",
    "reset_store": "kp_reset_store",
    "dev_rescan_store": "kp_dev_rescan_store",
    "sriov_numvfs_store": "kp_sriov_numvfs_store",
    "sriov_drivers_autoprobe_store": "kp_sriov_drivers_autoprobe_store",
}
"""Kernel store handler -> the entry program in sysfs_store_kprobe.bpf.c."""
ESSENTIAL_HANDLERS = ("bind_store", "unbind_store", "drivers_probe_store", "driver_override_store")
"""Without these (Kata's whole write sequence) kprobe mode is not chosen."""

BCC_HINT = "apt-get install python3-bpfcc, and make the venv with --system-site-packages"



@dataclass(frozen=True, slots=True, kw_only=True)
class KernelFacts:
    """What this machine offers the probes; gathered by `gather_facts`, judged by `choose_mode`."""

    bcc_error: str | None = None
    missing_caps: tuple[tuple[str, str], ...] = ()
    """(capability, why) the programs cannot be loaded or attached without (CAP_BPF,
    CAP_PERFMON; CAP_SYS_ADMIN grants both), from the effective set: never judged by uid."""
    tracefs: bool = True
    headers: bool = True
    release: str = ""
    kprobe_pmu: bool = False
    config_kprobes: str | None = None
    """`y`, `n` (unset) or None (kernel config unreadable)."""
    handlers: frozenset[str] = frozenset()
    """KPROBE_HANDLERS keys that kprobes can attach to here (present once in kallsyms)."""
    ambiguous: frozenset[str] = frozenset()
    """Handlers kallsyms lists more than once (static functions of the same name in other
    files) whose addresses are hidden (kptr_restrict): a kprobe by name is refused (>= 6.6) or
    could hit the wrong one, so they are not used."""
    addresses: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """Handlers listed more than once, with every address: each gets a kprobe by address
    (records from a same-named handler elsewhere name no PCI device or driver: dropped)."""
    raw_syscalls: bool = True
    """raw_syscalls:sys_enter and sys_exit exist."""


@dataclass(frozen=True, slots=True)
class ModeChoice:
    mode: str
    """`kprobe` or `tracepoint`; empty when the source cannot run."""
    reason: str
    hint: str = ""


def why_no_kprobes(f: KernelFacts) -> str:
    if f.config_kprobes == "n":
        return "CONFIG_KPROBES unset"
    if not f.kprobe_pmu:
        return "no kprobe PMU in /sys/bus/event_source/devices"
    missing = [h for h in ESSENTIAL_HANDLERS if h not in f.handlers]
    if missing:
        amb = [h for h in missing if h in f.ambiguous]
        rest = [h for h in missing if h not in f.ambiguous]
        parts = []
        if rest:
            parts.append("store handlers not attachable: " + ", ".join(rest))
        if amb:
            parts.append("store handlers ambiguous in kallsyms: " + ", ".join(amb))
        return "; ".join(parts)
    return ""


def choose_mode(requested: str, f: KernelFacts) -> ModeChoice:
    """The mode to run in, and why (what `vfiowatch check` and SourceStateChanged say)."""
    if requested not in MODES:
        return ModeChoice("", f"unknown ebpf mode {requested!r}", "use auto, kprobe or tracepoint")
    if f.bcc_error:
        return ModeChoice("", f"bcc is not importable ({f.bcc_error})", BCC_HINT)
    if f.missing_caps:
        return ModeChoice("", f"missing {caps.names(f.missing_caps)}: the attribution programs "
                              "cannot be loaded and attached (writes are not attributed)",
                          caps.grant_hint(f.missing_caps))
    if not f.tracefs:
        return ModeChoice("", "tracefs is not mounted (bcc attaches through it)",
                          "mount -t tracefs nodev /sys/kernel/tracing")
    if not f.headers:
        return ModeChoice("", f"no kernel headers at /lib/modules/{f.release}/build: bcc cannot compile",
                          f"apt-get install linux-headers-{f.release} (or run deploy/setup-host.sh)")
    no_kp = why_no_kprobes(f)
    if requested == "kprobe":
        if no_kp:
            return ModeChoice("", f"kprobe mode forced but unavailable: {no_kp}",
                              "use mode=auto or tracepoint, or a kernel with CONFIG_KPROBES=y")
        return ModeChoice("kprobe", f"forced; {_kprobe_coverage(f)}")
    if requested == "tracepoint" or no_kp:
        if not f.raw_syscalls:
            return ModeChoice("", "no raw_syscalls tracepoints (CONFIG_FTRACE_SYSCALLS unset?)"
                              + (f" and no kprobes: {no_kp}" if no_kp else ""),
                              "use a kernel with CONFIG_KPROBES=y or CONFIG_FTRACE_SYSCALLS=y")
        why = "forced" if requested == "tracepoint" else f"no kprobes: {no_kp}"
        return ModeChoice("tracepoint", why)
    return ModeChoice("kprobe", _kprobe_coverage(f))


def variant_note(variant: str) -> str:
    """What a tracepoint variant sees and misses (check, logs, dashboard)."""
    if variant == "open-only":
        return ("open-only variant: opens seen, values recovered afterwards (read back, or the "
                "device from the uevent that follows), a failed write's errno not seen; "
                'tracepoint_variant = "complete" sees it at about 1.5x per syscall')
    return "complete variant: value and result of every write, one program on every syscall"


def _kprobe_coverage(f: KernelFacts) -> str:
    text = f"kprobes on {len(f.handlers)} store handlers"
    absent = sorted(set(KPROBE_HANDLERS) - f.handlers)
    if absent:
        text += "; not covered: " + ", ".join(
            f"{h} ({'ambiguous' if h in f.ambiguous else 'absent'})" for h in absent)
    return text


KALLSYMS_LIMIT = 256 << 20
"""/proc/kallsyms is about 5 MB here (120,000 symbols); a larger one is not read."""


def _kernel_config_kprobes(paths: HostPaths) -> str | None:
    """`y` or `n` (CONFIG_KPROBES set or not), None when the configuration does not say."""
    value = kernel_config(paths).get("CONFIG_KPROBES")
    return None if value is None else ("n" if value == "n" else "y")


LOAD_CAPS = ("BPF", "PERFMON")
"""Without these (or CAP_SYS_ADMIN) bcc cannot create the maps or attach: nothing runs. The
other entries of NEEDS["ebpf"] (CAP_SYS_PTRACE) only cost the actor's details."""


def load_caps_missing() -> tuple[tuple[str, str], ...]:
    """The loading capabilities this process lacks (checked against NEEDS, the one list)."""
    return tuple(m for m in caps.missing("ebpf", caps.effective()) if m[0] in LOAD_CAPS)


def gather_facts(paths: HostPaths) -> KernelFacts:
    """Ask this machine what exists: bcc, privileges, tracefs, headers, kprobes, tracepoints."""
    bf = bcc_facade
    release = platform.release()
    err = bf.import_error()
    tracefs = any(paths.is_dir(f"/sys/{d}/events") for d in ("kernel/tracing", "kernel/debug/tracing"))
    pmu = paths.exists("/sys/bus/event_source/devices/kprobe")
    handlers: frozenset[str] = frozenset()
    ambiguous: frozenset[str] = frozenset()
    addresses: tuple[tuple[str, tuple[int, ...]], ...] = ()
    raw = True
    if err is None:
        if pmu:
            try:
                kallsyms = paths.read_bytes("/proc/kallsyms", KALLSYMS_LIMIT, regular=True)
            except OSError:
                kallsyms = b""
            addrs = bf.parse_kallsyms(set(KPROBE_HANDLERS), kallsyms.splitlines())
            found = set()
            for h in KPROBE_HANDLERS:
                ok = bf.kprobe_functions(f"^{h}$")  # honours the kprobe blacklist
                if ok is None:  # no debugfs: kallsyms alone
                    ok = {h} if addrs.get(h) else set()
                if ok:
                    found.add(h)
            addrs = {h: a for h, a in addrs.items() if h in found}
            several = {h: tuple(a) for h, a in addrs.items() if len(a) > 1}
            ambiguous = frozenset(h for h, a in several.items() if not all(a))
            addresses = tuple(sorted((h, a) for h, a in several.items() if all(a)))
            handlers = frozenset(found - ambiguous)
        raw = bf.tracepoint_exists("raw_syscalls", "sys_enter") and bf.tracepoint_exists(
            "raw_syscalls", "sys_exit")
    return KernelFacts(
        bcc_error=err,
        missing_caps=load_caps_missing(),
        tracefs=tracefs,
        headers=Path(f"/lib/modules/{release}/build").exists(),
        release=release,
        kprobe_pmu=pmu,
        config_kprobes=_kernel_config_kprobes(paths),
        handlers=handlers,
        ambiguous=ambiguous,
        addresses=addresses,
        raw_syscalls=raw,
    )


def syscall_defines() -> dict[str, int | str]:
    """-D flags for the syscall tracepoints this architecture lacks (open, dup2: not on arm64)."""
    out: dict[str, int | str] = {}
    for name in ("open", "dup2"):
        if bcc_facade.tracepoint_exists("syscalls", f"sys_enter_{name}"):
            out[f"HAVE_SYS_{name.upper()}"] = 1
    return out
