"""Provides Kata sandbox discovery under --root: state files, bundles, shim/QEMU processes, VFIO holders.

Readers only (`read_state`, `read_bundle`, `scan_processes`, `scan_vfio_holders`, ...): what
they read is decoded by the pure `diag.sources.kata.decode`. A sandbox exists when any of these
shows it: its state directory, its shim, its QEMU. A failed creation leaves no persist.json
(kata-facts §3.1, §6.2): the shim process (`-id <sid>`) still names it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diag import events as ev
from diag.common.paths import HostPaths, OutsideRoot
from diag.sources import proc
from diag.sources.kata.decode import (
    _SID_OK,
    BundleInfo,
    DecodeError,
    ProcInfo,
    StateInfo,
    decode_bundle,
    decode_persist,
    decode_qemu_argv,
    decode_state,
    vfio_group_of_link,
)
from diag.sources.sriovdp import PLUGIN_COMM

GO_SBS = "/run/vc/sbs"
GO_VM = "/run/vc/vm"
RS_STATE = "/run/kata"
BUNDLES = "/run/containerd/io.containerd.runtime.v2.task"
"""containerd's v2 task state dir; bundles are `<ns>/<id>/config.json`."""
NETNS_DIRS = ("/run/netns", "/var/run/netns")
MAX_STATE_BYTES = 16 << 20


# ---- Readers ----------------------------------------------------------------------------------


def _read(paths: HostPaths, host_path: str, limit: int = MAX_STATE_BYTES) -> tuple[str | None, str]:
    try:
        raw = paths.read_bytes(host_path, limit + 1, regular=True)
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        why = str(exc) if isinstance(exc, OutsideRoot) else (exc.strerror or str(exc))
        return None, f"{host_path}: cannot read: {why}"
    if len(raw) > limit:
        return None, f"{host_path}: larger than {limit} bytes, not read"
    return raw.decode("utf-8", "replace"), ""


def _listdir(paths: HostPaths, host_dir: str) -> list[str]:
    try:
        return sorted(paths.listdir(host_dir))
    except OSError:
        return []


@dataclass(frozen=True, slots=True)
class StateDirs:
    """Sandbox ids with a state directory, and the decoded state files (or their errors)."""

    go: frozenset[str] = frozenset()
    rs: frozenset[str] = frozenset()
    states: Mapping[str, StateInfo] = field(default_factory=dict)
    errors: Mapping[str, DecodeError] = field(default_factory=dict)
    vm_pids: Mapping[str, int] = field(default_factory=dict)
    """/run/vc/vm/<sid>/pid."""


def state_signature(paths: HostPaths) -> tuple[Any, ...]:
    """A cheap fingerprint of the state dirs (names + mtimes) to skip re-reading when unchanged."""
    sig: list[Any] = []
    for d in (GO_SBS, GO_VM, RS_STATE):
        try:
            st = paths.stat(d)
        except OSError:
            sig.append(None)
            continue
        sig.append(st.st_mtime_ns)
        for sid in _listdir(paths, d):
            for f in ("persist.json", "state.json", "pid"):
                try:
                    fs = paths.stat(f"{d}/{sid}/{f}")
                    sig.append((d, sid, f, fs.st_mtime_ns, fs.st_size, fs.st_ino))
                except OSError:
                    pass
    return tuple(sig)


def read_state(paths: HostPaths) -> StateDirs:
    go = {s for s in _listdir(paths, GO_SBS) if _SID_OK.match(s)}
    rs = {s for s in _listdir(paths, RS_STATE) if _SID_OK.match(s)
          and paths.is_dir(f"{RS_STATE}/{s}")}
    states: dict[str, StateInfo] = {}
    errors: dict[str, DecodeError] = {}
    # Go's persist.json first, then runtime-rs's state.json (a later one wins a shared id).
    sources = ((go, GO_SBS, "persist.json", decode_persist), (rs, RS_STATE, "state.json", decode_state))
    for sids, base, name, decode in sources:
        for sid in sorted(sids):
            p = f"{base}/{sid}/{name}"
            text, why = _read(paths, p)
            if why:
                errors[sid] = DecodeError(p, why)
            elif text is not None:
                r = decode(text, p)
                if isinstance(r, DecodeError):
                    errors[sid] = r
                else:
                    states[sid] = r
    vm_pids: dict[str, int] = {}
    for sid in _listdir(paths, GO_VM):
        text, _ = _read(paths, f"{GO_VM}/{sid}/pid", 64)
        if text and text.strip().isdigit():
            vm_pids[sid] = int(text.strip())
    return StateDirs(frozenset(go), frozenset(rs), states, errors, vm_pids)


def bundle_namespaces(paths: HostPaths) -> list[str]:
    """containerd namespaces holding task bundles (`k8s.io`, `moby`, ...)."""
    return _listdir(paths, BUNDLES)


BundleCache = dict[str, tuple[tuple[Any, ...], "BundleInfo | DecodeError"]]


def read_bundle(paths: HostPaths, sandbox_id: str, namespaces: Iterable[str] | None = None,
                cache: BundleCache | None = None) -> BundleInfo | DecodeError | None:
    """The sandbox's bundle config.json (any containerd namespace, k8s.io first).

    With `cache`, a file whose (mtime, size, inode) did not change is not read again.
    """
    nss = list(namespaces) if namespaces is not None else (
        ["k8s.io"] + [n for n in _listdir(paths, BUNDLES) if n != "k8s.io"])
    for ns in nss:
        p = f"{BUNDLES}/{ns}/{sandbox_id}/config.json"
        try:
            st = paths.stat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return DecodeError(p, f"{p}: cannot read: {exc.strerror or exc}")
        key = (p, st.st_mtime_ns, st.st_size, st.st_ino)
        if cache is not None and sandbox_id in cache and cache[sandbox_id][0] == key:
            return cache[sandbox_id][1]
        text, why = _read(paths, p, 4 << 20)
        if text is None and not why:
            continue
        shim, _ = _read(paths, f"{BUNDLES}/{ns}/{sandbox_id}/shim-binary-path", 4096)
        out: BundleInfo | DecodeError = DecodeError(p, why) if why else decode_bundle(text or "", p, (shim or "").strip())
        if cache is not None:
            cache[sandbox_id] = (key, out)
        return out
    if cache is not None:
        cache.pop(sandbox_id, None)
    return None


@dataclass(frozen=True, slots=True)
class ProcScan:
    shims: Mapping[str, ProcInfo] = field(default_factory=dict)
    """Sandbox id -> the long-lived shim (`-id <sid>`; not the short `... delete` invocation)."""
    vmms: Mapping[str, ProcInfo] = field(default_factory=dict)
    containerd: ProcInfo | None = None
    host_netns: int | None = None
    pids_seen: int = 0


_VMM_EXE = re.compile(r"(?:^|/)(?:qemu-system-[\w-]+|qemu-kvm|cloud-hypervisor)$")


class ProcCache:
    """Per-pid memory between scans so a round reads /proc only where something can have changed.

    A pid's comm is read when the pid is new, on every scan while it is `containerd` or
    `containerd-shim` (they fork children that exec into a shim or QEMU), and for every pid once
    per `full_every` scans (anything else that execs later is found within that many rounds).
    The identity of a shim or VMM (argv, exe, environment, netns) is read once per pid.
    """

    REREAD = frozenset({"containerd", proc.KATA_SHIM_COMM})

    def __init__(self, full_every: int = 10) -> None:
        self.full_every = max(1, full_every)
        self.scans = 0
        self.comms: dict[int, str] = {}
        self.infos: dict[int, tuple[str, ProcInfo | None]] = {}
        self.reads = 0
        """comm reads done by the last scan (for the bench)."""


def _identify(paths: HostPaths, pid: int, comm: str) -> ProcInfo | None:
    return _identify_settled(paths, pid, comm)[0]


def _identify_settled(paths: HostPaths, pid: int, comm: str) -> tuple[ProcInfo | None, bool]:
    """The process's identity, and whether it is final. Not final: a process with one of our
    comms but no argv yet. The kernel sets the new comm (and exe) early in an exec and the new
    argv only when it loads the program, so a /proc read in between sees the shim's comm with
    an empty cmdline; cached, that answer would hide the shim for good (it keeps its comm)."""
    is_shim = comm == proc.KATA_SHIM_COMM
    is_vmm = comm in proc.VMM_COMMS or comm.startswith("qemu-system")
    if not (is_shim or is_vmm or comm == "containerd"):
        return None, True
    argv = proc.read_argv(paths, pid)
    if not argv:
        return None, False  # mid-exec (or a zombie): look again next time
    return _identify_argv(paths, pid, comm, argv, is_shim), True


def _identify_argv(paths: HostPaths, pid: int, comm: str, argv: list[str], is_shim: bool) -> ProcInfo | None:
    exe = proc.read_link(paths, pid, "exe")
    if comm == "containerd":
        if argv and os.path.basename(argv[0]) == "containerd":
            return ProcInfo(pid, comm, exe, tuple(argv), None)
        return None
    if is_shim:
        sid, runtime = proc.kata_shim_identity(argv, exe, comm)
        if sid is None:
            return None
        env = proc.read_environ(paths, pid)
        cwd = proc.read_link(paths, pid, "cwd")
        return ProcInfo(pid, comm, exe, tuple(argv), sid, runtime, proc.netns_inode(paths, pid),
                        env.get("KATA_CONF_FILE"), cwd=cwd)
    qa = decode_qemu_argv(argv)
    if not qa.sandbox_id:
        return None
    return ProcInfo(pid, comm, exe, tuple(argv), qa.sandbox_id, None, proc.netns_inode(paths, pid), vfio=qa.vfio)


def scan_processes(paths: HostPaths, cache: ProcCache | None = None) -> ProcScan:
    """Kata shims and VMMs (and containerd) from /proc; with a cache, only what can have changed is read."""
    cache = cache if cache is not None else ProcCache(full_every=1)
    full = cache.scans % cache.full_every == 0
    cache.scans += 1
    found: list[ProcInfo] = []
    comms: dict[int, str] = {}
    reads = 0
    for pid in proc.iter_pids(paths):
        comm = cache.comms.get(pid)
        if comm is None or full or comm in cache.REREAD:
            reads += 1
            comm = proc.read_comm(paths, pid)
            if comm is None:
                continue
        comms[pid] = comm
        known = cache.infos.get(pid)
        if known is not None and known[0] == comm and not (full and known[1] is not None):
            info = known[1]
        else:
            info, settled = _identify_settled(paths, pid, comm)
            if settled:
                cache.infos[pid] = (comm, info)
        if info is not None:
            found.append(info)
    cache.comms = comms
    for gone in [p for p in cache.infos if p not in comms]:
        del cache.infos[gone]
    cache.reads = reads
    return _assemble(found, proc.netns_inode(paths, 1), len(comms))


_SHORT_VERBS = frozenset({"start", "delete"})
"""Short invocations of the shim binary (`... start` that spawns the long-lived shim and
exits, containerd's `... delete` cleanup): they never hide the long-lived shim."""


def _assemble(infos: Iterable[ProcInfo], host_netns: int | None, pids_seen: int) -> ProcScan:
    """The scan's view from the identified processes, in pid order."""
    shims: dict[str, ProcInfo] = {}
    vmms: dict[str, ProcInfo] = {}
    containerd = None
    for info in sorted(infos, key=lambda i: i.pid):
        if info.comm == "containerd":
            containerd = containerd or info
        elif info.comm == proc.KATA_SHIM_COMM:
            if not _SHORT_VERBS.intersection(info.argv[1:]) or info.sandbox_id not in shims:
                shims[info.sandbox_id or ""] = info
        else:
            vmms[info.sandbox_id or ""] = info
    return ProcScan(shims, vmms, containerd, host_netns, pids_seen)


class ProcWatch:
    """The Kata processes (shims, VMMs, containerd) kept up to date by process events instead
    of /proc listings: `seed()` reads /proc once, then `exec(pid)` and `exit(pid)` as the kernel
    reports them. An exec costs one read of /proc/<pid>/comm unless the new program is one of
    them; an exit costs nothing unless the pid was one of them."""

    WATCHED = frozenset({"containerd", proc.KATA_SHIM_COMM, *proc.VMM_COMMS})

    def __init__(self, paths: HostPaths) -> None:
        self.paths = paths
        self.infos: dict[int, ProcInfo] = {}
        self.plugins: dict[int, str] = {}
        """The SR-IOV device plugins (pid -> comm), kept by the same events: the exposure
        finds their configuration from these instead of reading every process's comm."""
        self.plugins_changed = False
        """A plugin came or went since the caller last cleared this."""
        self.host_netns: int | None = None
        self.execs = 0
        """Exec events looked at (for the bench)."""

    def seed(self) -> ProcScan:
        self.infos = {}
        self.plugins = {}
        self.plugins_changed = True
        n = 0
        for pid in proc.iter_pids(self.paths):
            n += 1
            comm = proc.read_comm(self.paths, pid)
            if comm is None:
                continue
            if comm == PLUGIN_COMM:
                self.plugins[pid] = comm
            info = _identify(self.paths, pid, comm)
            if info is not None:
                self.infos[pid] = info
        self.host_netns = proc.netns_inode(self.paths, 1)
        return _assemble(self.infos.values(), self.host_netns, n)

    def exec(self, pid: int) -> ProcInfo | bool:
        """A process exec'd: its new identity when it is one of ours (or True when it was one
        and no longer is), else False."""
        self.execs += 1
        was = self.infos.pop(pid, None)
        comm = proc.read_comm(self.paths, pid)
        if (comm == PLUGIN_COMM) != (pid in self.plugins):
            self.plugins_changed = True
            if comm == PLUGIN_COMM:
                self.plugins[pid] = comm
            else:
                del self.plugins[pid]
        if comm is None or not (comm in self.WATCHED or comm.startswith("qemu-system")):
            return was is not None
        info = _identify(self.paths, pid, comm)
        if info is None:
            return was is not None
        self.infos[pid] = info
        return info

    def exit(self, pid: int) -> ProcInfo | None:
        """A process exited: its identity when it was one of ours."""
        if self.plugins.pop(pid, None) is not None:
            self.plugins_changed = True
        return self.infos.pop(pid, None)

    def view(self) -> ProcScan:
        return _assemble(self.infos.values(), self.host_netns, len(self.infos))


def process_start_ns(paths: HostPaths, pid: int, boot_ns: int) -> int | None:
    """Wall-clock start of `pid` from /proc/<pid>/stat field 22 (clock ticks after boot)."""
    if not boot_ns:
        return None
    try:
        text = paths.read_text(f"/proc/{pid}/stat", 4096)
        ticks = int(text[text.rfind(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return boot_ns + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def config_mtime_ns(paths: HostPaths, cfg: ev.KataConfig) -> int | None:
    """Latest modification time of a configuration's main file and drop-ins (under the root)."""
    latest = None
    for p in (cfg.path, *cfg.dropins):
        if p:
            try:
                m = paths.stat(p).st_mtime_ns
            except OSError:
                continue
            latest = m if latest is None else max(latest, m)
    return latest


def containerd_config_arg(info: ProcInfo | None) -> str | None:
    """`--config`/`-c` of the running containerd, when it was given one."""
    if info is None:
        return None
    argv = list(info.argv)
    for i, a in enumerate(argv):
        if a in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(("--config=", "-c=")):
            return a.split("=", 1)[1]
    return None


def scan_vfio_holders(paths: HostPaths, pids: Iterable[int] | None = None) -> dict[int, tuple[int, ...]]:
    """VFIO group -> pids holding `/dev/vfio/<group>` open (readlink of every /proc/<pid>/fd/*)."""
    out: dict[int, set[int]] = {}
    for pid in (pids if pids is not None else proc.iter_pids(paths)):
        try:
            with paths.opendir(f"/proc/{pid}/fd") as d:
                for name in d.listdir():
                    try:
                        target = d.readlink(name)  # a magic link's name: never followed
                    except OSError:
                        continue
                    if target.startswith("/dev/vfio/"):
                        g = vfio_group_of_link(target)
                        if g is not None:
                            out.setdefault(g, set()).add(pid)
        except OSError:
            continue
    return {g: tuple(sorted(p)) for g, p in out.items()}


def vfio_groups_present(paths: HostPaths) -> bool:
    """Whether any /dev/vfio/<N> node exists (no node: nothing can hold one, skip the fd scan)."""
    return any(n.isdigit() for n in _listdir(paths, "/dev/vfio"))


def netns_names(paths: HostPaths) -> dict[int, str]:
    """Inode -> name for the named network namespaces (/run/netns, /var/run/netns)."""
    out: dict[int, str] = {}
    for d in NETNS_DIRS:
        for name in _listdir(paths, d):
            try:
                out.setdefault(paths.stat(f"{d}/{name}").st_ino, name)
            except OSError:
                continue
    return out


