"""Provides the effective capability set of this process and, per part, what NEEDS says is missing.

Privileges are judged by capability, never by uid: uid 0 with CAP_BPF dropped cannot load a
program, and an ordinary user granted CAP_NET_ADMIN can raise a socket buffer. The set is the
kernel's own (`CapEff:` of /proc/self/status: this process, never a path under --root);
what each part needs is diag.common.needs.NEEDS, the one list the DaemonSet and the unit are
tested against.

Kernel equivalences honoured (kernel/bpf/syscall.c `bpf_capable`, `perfmon_capable`): CAP_SYS_ADMIN
also grants what CAP_BPF and CAP_PERFMON grant (before Linux 5.8, which added those two, it was
the only way).

    from diag.common import caps
    have = caps.effective()
    caps.missing("ebpf", have)      # -> (("BPF", why), ("PERFMON", why)) when dropped
"""

from __future__ import annotations

from dataclasses import dataclass

from diag.common.needs import NEEDS

NAMES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
"""Capability names without `CAP_`, by bit number (linux/capability.h)."""

IMPLIED_BY_SYS_ADMIN = frozenset({"BPF", "PERFMON"})
"""What CAP_SYS_ADMIN also grants (bpf_capable(), perfmon_capable())."""


@dataclass(frozen=True, slots=True)
class CapSet:
    """An effective capability set, as the kernel reported it."""

    names: frozenset[str]
    known: bool = True
    """False when /proc/self/status could not be read: nothing can be said."""

    def has(self, cap: str) -> bool:
        """Whether the kernel would grant what `cap` guards (CAP_SYS_ADMIN counts for BPF and
        PERFMON)."""
        if cap in self.names:
            return True
        return cap in IMPLIED_BY_SYS_ADMIN and "SYS_ADMIN" in self.names

    @property
    def full(self) -> bool:
        """Every capability this kernel knows of (a privileged container or root unconfined)."""
        return self.known and set(NAMES[:39]) <= self.names


def parse_status(text: str) -> CapSet:
    """The `CapEff:` line of a /proc/<pid>/status text, as names (unknown bits as `CAP_<n>`)."""
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            try:
                mask = int(line.split()[1], 16)
            except (IndexError, ValueError):
                break
            return CapSet(frozenset(
                NAMES[bit] if bit < len(NAMES) else f"CAP_{bit}"
                for bit in range(64) if mask >> bit & 1))
    return CapSet(frozenset(), known=False)


def effective() -> CapSet:
    """This process's effective capabilities (read each call: they may be dropped at run time)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            return parse_status(fh.read(65536))
    except OSError:
        return CapSet(frozenset(), known=False)


def missing(part: str, have: CapSet) -> tuple[tuple[str, str], ...]:
    """(capability, why) that `part` (a NEEDS entry: a source or sink) needs and `have` lacks."""
    if not have.known:
        return ()
    for n in NEEDS:
        if n.part == part:
            return tuple((c, why) for c, why in n.capabilities if not have.has(c))
    return ()


def names(caps: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """`CAP_BPF, CAP_PERFMON` (for lines and hints)."""
    return ", ".join(f"CAP_{c}" for c, _ in caps)


def grant_hint(caps: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """The one-line fix: how to grant `caps` to the service, the pod or a shell."""
    listed = " ".join(f"CAP_{c}" for c, _ in caps)
    return (f"grant {names(caps)}: in the unit CapabilityBoundingSet= and AmbientCapabilities="
            f"{listed} (deploy/vfiowatch.service), in the pod securityContext.capabilities.add "
            f"(deploy/daemonset.yaml), or run as root without dropping them")
