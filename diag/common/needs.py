"""Provides NEEDS: the capabilities, host paths and host namespaces each part of the agent needs.

One list, with the reason for every entry. deploy/daemonset.yaml and deploy/vfiowatch.service
are tested against it (tests/unit/test_daemonset.py, test_deploy.py): the capabilities they
grant are exactly these, every host path here is mounted as the pod needs it and every host
path the pod mounts is here. `vfiowatch check` can report what is missing from the same list.
Pure data: importing it touches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostPath:
    """A directory (or file) of the host the agent reads or writes."""

    path: str
    """Absolute, as on the host."""
    why: str
    writable: bool = False
    under_root: bool = True
    """Read under `--root` (the host's `/` at `/host` in the pod). False for what the agent or
    bcc opens at its own path: tracefs, the kernel headers, the journal's directory."""
    host: bool = True
    """False for what the pod provides, not the node: a scratch directory (a memory emptyDir)
    or the configuration file's directory (a ConfigMap)."""


@dataclass(frozen=True, slots=True)
class Needs:
    """What one part of the agent (a source or a sink) needs from the host."""

    part: str
    capabilities: tuple[tuple[str, str], ...] = ()
    """(capability without `CAP_`, why) it cannot work without."""
    paths: tuple[HostPath, ...] = ()
    namespaces: tuple[tuple[str, str], ...] = ()
    """(host namespace `net` or `pid`, why) it must share."""
    fallback_capabilities: tuple[tuple[str, str], ...] = ()
    """Only for a fallback path; not granted by the manifests (the why says when it matters)."""


NEEDS: tuple[Needs, ...] = (
    Needs(
        "uevent",
        capabilities=(("NET_ADMIN", "SO_RCVBUFFORCE: a receive buffer large enough that a burst "
                       "of 50,000 uevents is not dropped"),),
        paths=(HostPath("/sys", "PCI devices, drivers, VFs and IOMMU groups: the inventory and the "
                    "resync after a loss"),),
        namespaces=(("net", "the kernel broadcasts uevents only in the initial network "
                     "namespace"),),
    ),
    Needs(
        "links",
        capabilities=(
            ("NET_ADMIN", "SO_RCVBUFFORCE on the rtnetlink sockets"),
            ("SYS_ADMIN", "setns() into each pod's network namespace to dump and follow its "
                          "links"),
            ("SYS_PTRACE", "open /proc/<pid>/ns/net of other users' processes (namespaces held "
                           "only by a process)"),
        ),
        paths=(HostPath("/run/netns", "named network namespaces"),
               HostPath("/proc", "namespaces held by processes (/proc/<pid>/ns/net)")),
        namespaces=(("net", "the host's own links, and namespace ids relative to it"),
                    ("pid", "the processes that hold pod network namespaces")),
    ),
    Needs(
        "ebpf",
        capabilities=(
            ("BPF", "load the attribution programs and create their maps (bcc)"),
            ("PERFMON", "attach them to tracepoints/kprobes and read their buffers"),
            ("SYS_PTRACE", "read /proc/<pid>/exe and cmdline of the writing process: the "
                           "actor's name"),
        ),
        paths=(
            HostPath("/sys/kernel/tracing", "tracefs: bcc attaches there (kprobe_events)",
                 writable=True, under_root=False),
            HostPath("/lib/modules", "the node's kernel headers bcc compiles against",
                 under_root=False),
            HostPath("/usr/src", "where /lib/modules/<release>/build points", under_root=False),
            HostPath("/tmp", "bcc's temporary files (kernel headers unpacked from kheaders)",
                 writable=True, under_root=False, host=False),
        ),
        namespaces=(("pid", "the pids it attributes writes to are the host's"),),
    ),
    Needs(
        "kata",
        capabilities=(
            ("SYS_PTRACE", "read /proc/<pid>/fd and environ of the Kata shim and QEMU: which "
                           "process holds /dev/vfio/<group>, which configuration a shim runs"),
            ("DAC_READ_SEARCH", "read Kata's sandbox state and other users' /proc entries "
                                "whatever their modes"),
        ),
        paths=(
            HostPath("/run/vc", "Kata (Go runtime) sandbox state"),
            HostPath("/run/kata", "Kata (runtime-rs) sandbox state"),
            HostPath("/run/containerd", "shim sockets and task state: sandbox to pod"),
            HostPath("/etc/kata-containers", "Kata's configuration and its drop-ins"),
            HostPath("/usr/share/defaults/kata-containers", "Kata's shipped configuration"),
            HostPath("/opt/kata", "Kata's configuration when installed by kata-deploy"),
            HostPath("/var/log/journal", "Kata's, containerd's and the kernel's log lines "
                                     "(journalctl --root)"),
            HostPath("/dev", "/dev/vfio/<group> nodes, and /dev/kmsg when there is no journal"),
            HostPath("/proc", "the shims, QEMU and their open files"),
        ),
        namespaces=(("pid", "the shims and QEMU are the host's processes"),),
        fallback_capabilities=(("SYSLOG", "read /dev/kmsg when the node has no journal and "
                                          "kernel.dmesg_restrict = 1"),),
    ),
    Needs(
        "journal",
        paths=(HostPath("/var/lib/vfiowatch", "the journal: it survives the agent", writable=True,
                    under_root=False),),
    ),
    Needs(
        "metrics",
        namespaces=(("net", "/metrics and /healthz on the node's own address"),),
    ),
    Needs(
        "config",
        paths=(HostPath("/etc/vfiowatch", "the configuration file (--config): [core] thresholds, "
                                          "[sources], [k8s] events", under_root=False,
                        host=False),),
    ),
    Needs(
        "k8s-events",
        # No host path or capability: the API server over the network, with the pod's service
        # account (diag.sinks.k8s_events.API_PERMISSIONS says what it may do).
    ),
)
"""Every part of the agent, in the order it starts."""


def capabilities(*, fallback: bool = False) -> frozenset[str]:
    """Every capability some part needs (with `fallback`, also those of fallback paths)."""
    out = {c for n in NEEDS for c, _ in n.capabilities}
    if fallback:
        out |= {c for n in NEEDS for c, _ in n.fallback_capabilities}
    return frozenset(out)


def namespaces() -> frozenset[str]:
    """The host namespaces the agent must share (`net`, `pid`)."""
    return frozenset(ns for n in NEEDS for ns, _ in n.namespaces)


def paths() -> tuple[HostPath, ...]:
    """Every path some part needs, once (the first reason kept)."""
    seen: dict[str, HostPath] = {}
    for n in NEEDS:
        for p in n.paths:
            seen.setdefault(p.path, p)
    return tuple(seen.values())
