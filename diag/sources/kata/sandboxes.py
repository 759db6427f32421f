"""Provides Kata sandbox discovery: state files, containerd bundles, shim/QEMU processes, VFIO holders.

Pure decoders (tested on fixture files): `decode_persist` (Go /run/vc/sbs/<id>/persist.json),
`decode_state` (runtime-rs /run/kata/<id>/state.json), `decode_bundle` (containerd's OCI
config.json), `decode_qemu_argv` (`-name sandbox-<id>`, `-device vfio-pci,host=<BDF>,...,bus=`),
`vfio_group_of_link` and `assemble` (one SandboxStarted per sandbox from everything known).

Readers (`read_state`, `scan_processes`, `scan_vfio_holders`) only read under the root. A sandbox
exists when any of these shows it: its state directory, its shim, its QEMU. A failed creation
leaves no persist.json (kata-facts §3.1, §6.2): the shim process (`-id <sid>`) still names it.
persist.json does not hold the real cold_plug_vfio (§3.1): it is derived from the handler's
configuration plus the pod's enabled annotations; runtime-rs's state.json does hold it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from diag import events as ev
from diag.paths import HostPaths, OutsideRoot
from diag.sources import proc
from diag.sources.kata import config as kconfig
from diag.sources.kata.signatures import normalise_bdf

GO_SBS = "/run/vc/sbs"
GO_VM = "/run/vc/vm"
RS_STATE = "/run/kata"
BUNDLES = "/run/containerd/io.containerd.runtime.v2.task"
"""containerd's v2 task state dir; bundles are `<ns>/<id>/config.json`."""
NETNS_DIRS = ("/run/netns", "/var/run/netns")
MAX_STATE_BYTES = 16 << 20

CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CRI_NAME = "io.kubernetes.cri.sandbox-name"
CRI_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
CRI_UID = "io.kubernetes.cri.sandbox-uid"
CRI_RUNTIME_HANDLER = "io.containerd.cri.runtime-handler"
_VFIO_LINK = re.compile(r"^/dev/vfio/(\d+)$")
_BDF_OK = re.compile(r"^(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
"""A PCI address (domain optional); anything else in a state file or argv is ignored."""
_SID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class DecodeError:
    """A state file the agent could not use, with the position JSON gave."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None


def _json(text: str, path: str) -> tuple[Any, DecodeError | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        body = text.rstrip()
        cut = exc.pos >= len(body) or exc.msg.startswith("Unterminated") or not body.endswith(("}", "]"))
        hint = " (truncated: written while we read it?)" if cut else ""
        return None, DecodeError(path, f"{path}: line {exc.lineno}, column {exc.colno}: {exc.msg}{hint}",
                                 exc.lineno, exc.colno)


def _d(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _s(v: Any) -> str:
    return v.strip() if isinstance(v, str) else ""


def _pid(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 22 else None


@dataclass(frozen=True, slots=True)
class VfioDev:
    """A VFIO device a sandbox's VMM was given."""

    bdf: str
    bus: str = ""
    port: str = ""
    cold_plug: bool | None = None


@dataclass(frozen=True, slots=True)
class StateInfo:
    """What a Go persist.json or runtime-rs state.json says."""

    path: str
    runtime: str
    vfs: tuple[ev.SandboxVf, ...] = ()
    """Physical endpoints: the VFs Kata moved, with the host driver it will restore."""
    vfio_devs: tuple[VfioDev, ...] = ()
    vmm_pid: int | None = None
    hypervisor: str = ""
    netns_path: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    """runtime-rs only: the VFIO settings it saved (`cold_plug_vfio`, ...)."""


def decode_persist(text: str, path: str) -> StateInfo | DecodeError:
    """Go runtime persist.json (kata-facts §3.1; CapitalCase keys, no JSON tags)."""
    data, err = _json(text, path)
    if err is not None:
        return err
    if not isinstance(data, Mapping):
        return DecodeError(path, f"{path}: top level is {type(data).__name__}, not an object")
    vfs = []
    for ep in _l(_d(data.get("Network")).get("Endpoints")):
        ep = _d(ep)
        if ep.get("Type") == "physical":
            phys = _d(ep.get("Physical"))
            bdf = _s(phys.get("BDF"))
            if _BDF_OK.match(bdf):
                vfs.append(ev.SandboxVf(bdf=normalise_bdf(bdf), host_driver=_s(phys.get("Driver")) or None))
    devs = []
    for dev in _l(data.get("Devices")):
        dev = _d(dev)
        if dev.get("Type") != "vfio" and not dev.get("VFIODevs"):
            continue
        for vd in _l(dev.get("VFIODevs")):
            vd = _d(vd)
            bdf = _s(vd.get("BDF"))
            if _BDF_OK.match(bdf):
                devs.append(VfioDev(bdf=normalise_bdf(bdf), bus=_s(vd.get("Bus")), port=_s(vd.get("Port")),
                                    cold_plug=dev.get("ColdPlug") if isinstance(dev.get("ColdPlug"), bool) else None))
    hs = _d(data.get("HypervisorState"))
    cfg = _d(data.get("Config"))
    annotations: dict[str, str] = {}
    for cc in _l(cfg.get("ContainerConfigs")):
        ann = _d(_d(cc).get("Annotations"))
        if ann.get(CRI_CONTAINER_TYPE) in ("sandbox", None) or not annotations:
            annotations = {str(k): str(v) for k, v in ann.items()}
            if ann.get(CRI_CONTAINER_TYPE) == "sandbox":
                break
    return StateInfo(
        path=path, runtime="go", vfs=tuple(vfs), vfio_devs=tuple(devs), vmm_pid=_pid(hs.get("Pid")),
        hypervisor=_s(hs.get("Type")) or _s(cfg.get("HypervisorType")),
        netns_path=_s(_d(data.get("Network")).get("NetworkID")), annotations=annotations,
    )


def decode_state(text: str, path: str) -> StateInfo | DecodeError:
    """runtime-rs state.json (kata-facts §3.3; snake_case keys; config saved under hypervisor)."""
    data, err = _json(text, path)
    if err is not None:
        return err
    if not isinstance(data, Mapping):
        return DecodeError(path, f"{path}: top level is {type(data).__name__}, not an object")
    vfs = []
    for ep in _l(_d(data.get("resource")).get("endpoint")):
        phys = _d(_d(ep).get("physical_endpoint"))
        bdf = _s(phys.get("bdf"))
        if _BDF_OK.match(bdf):
            vfs.append(ev.SandboxVf(bdf=normalise_bdf(bdf), host_driver=_s(phys.get("driver")) or None))
    hyp = _d(data.get("hypervisor"))
    hcfg = _d(hyp.get("config"))
    settings = {}
    for key in kconfig.VFIO_KEYS:
        v = hcfg.get(key)
        if v is None:
            v = _d(hcfg.get("device_info")).get(key)
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            settings[key] = str(v)
    return StateInfo(
        path=path, runtime="rs", vfs=tuple(vfs), vmm_pid=_pid(hyp.get("pid")),
        hypervisor=_s(hyp.get("hypervisor_type")), netns_path=_s(hyp.get("netns")), settings=settings,
    )


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """containerd's OCI config.json of a task: pod identity and annotations."""

    path: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    container_type: str = ""
    sandbox_id: str = ""
    pod: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    netns_path: str = ""
    shim_binary: str = ""
    key_lines: Mapping[str, int] = field(default_factory=dict)
    """1-based line of each `io.katacontainers.*` annotation key in the file."""


def _key_lines(text: str, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r'"(' + re.escape(prefix) + r'[^"]*)"\s*:', line):
            out.setdefault(m.group(1), n)
    return out


def decode_bundle(text: str, path: str, shim_binary: str = "") -> BundleInfo | DecodeError:
    data, err = _json(text, path)
    if err is not None:
        return err
    if not isinstance(data, Mapping):
        return DecodeError(path, f"{path}: top level is {type(data).__name__}, not an object")
    ann = {str(k): str(v) for k, v in _d(data.get("annotations")).items()}
    netns = ""
    for ns in _l(_d(data.get("linux")).get("namespaces")):
        ns = _d(ns)
        if ns.get("type") == "network":
            netns = _s(ns.get("path"))
    return BundleInfo(
        path=path, annotations=ann, container_type=ann.get(CRI_CONTAINER_TYPE, ""),
        sandbox_id=ann.get(CRI_SANDBOX_ID, ""), pod=ann.get(CRI_NAME), pod_namespace=ann.get(CRI_NAMESPACE),
        pod_uid=ann.get(CRI_UID), netns_path=netns, shim_binary=shim_binary,
        key_lines=_key_lines(text, "io.katacontainers."),
    )


@dataclass(frozen=True, slots=True)
class QemuArgs:
    sandbox_id: str | None
    vfio: tuple[VfioDev, ...] = ()


def _split_opts(s: str) -> list[str]:
    """QEMU option string split on commas, `,,` being a literal comma."""
    out, cur, i = [], [], 0
    while i < len(s):
        if s[i] == ",":
            if i + 1 < len(s) and s[i + 1] == ",":
                cur.append(",")
                i += 2
                continue
            out.append("".join(cur))
            cur = []
        else:
            cur.append(s[i])
        i += 1
    out.append("".join(cur))
    return out


def decode_qemu_argv(argv: Sequence[str]) -> QemuArgs:
    """Sandbox id from `-name sandbox-<id>` and every `-device vfio-pci,host=<BDF>,...,bus=<bus>`."""
    devs = []
    for i, a in enumerate(argv):
        if a in ("-device", "--device") and i + 1 < len(argv):
            opts = _split_opts(argv[i + 1])
            if opts and opts[0] in ("vfio-pci", "driver=vfio-pci"):
                kv = dict(o.split("=", 1) for o in opts[1:] if "=" in o)
                host = kv.get("host", "")
                if _BDF_OK.match(host):
                    devs.append(VfioDev(bdf=normalise_bdf(host), bus=kv.get("bus", "")))
    return QemuArgs(proc.vmm_sandbox(list(argv)), tuple(devs))


def vfio_group_of_link(target: str) -> int | None:
    """`/dev/vfio/12` -> 12 (an fd link target); None for `/dev/vfio/vfio` and anything else."""
    m = _VFIO_LINK.match(target)
    return int(m.group(1)) if m else None


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
class ProcInfo:
    """A Kata shim or VMM process."""

    pid: int
    comm: str
    exe: str
    argv: tuple[str, ...]
    sandbox_id: str | None
    runtime: str | None = None
    netns: int | None = None
    env_kata_conf: str | None = None
    vfio: tuple[VfioDev, ...] = ()
    cwd: str = ""


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
    is_shim = comm == proc.KATA_SHIM_COMM
    is_vmm = comm in proc.VMM_COMMS or comm.startswith("qemu-system")
    if not (is_shim or is_vmm or comm == "containerd"):
        return None
    argv = proc.read_argv(paths, pid)
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
    shims: dict[str, ProcInfo] = {}
    vmms: dict[str, ProcInfo] = {}
    containerd = None
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
            info = _identify(paths, pid, comm)
            cache.infos[pid] = (comm, info)
        if info is None:
            continue
        if info.comm == "containerd":
            containerd = containerd or info
        elif info.comm == proc.KATA_SHIM_COMM:
            # The short `... delete` cleanup invocation never hides the long-lived shim.
            if "delete" not in info.argv[1:] or info.sandbox_id not in shims:
                shims[info.sandbox_id or ""] = info
        else:
            vmms[info.sandbox_id or ""] = info
    cache.comms = comms
    for gone in [p for p in cache.infos if p not in comms]:
        del cache.infos[gone]
    cache.reads = reads
    return ProcScan(shims, vmms, containerd, proc.netns_inode(paths, 1), len(comms))


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


# ---- Assembly (pure) ----------------------------------------------------------------------------


def handler_for(
    handlers: Sequence[kconfig.RuntimeHandler], *, shim_exe: str = "", shim_argv0: str = "",
    annotations: Mapping[str, str] | None = None, runtime: str | None = None,
    hypervisor: str = "", configs: Mapping[str, ev.KataConfig] | None = None,
) -> str | None:
    """Which containerd runtime handler started a sandbox (None when it cannot be told)."""
    if not handlers:
        return None
    names = {h.name for h in handlers}
    want = (annotations or {}).get(CRI_RUNTIME_HANDLER)
    if want in names:
        return want
    cands = [h for h in handlers if h.shim_binary and (
        h.shim_binary == shim_exe or (not h.runtime_path and os.path.basename(shim_argv0 or shim_exe)
                                      == os.path.basename(h.shim_binary)))]
    if not cands and runtime:
        cands = [h for h in handlers if h.runtime == runtime]
    if not cands:
        cands = list(handlers)
    if len(cands) > 1 and hypervisor and configs:
        narrowed = [h for h in cands if configs.get(h.name) and configs[h.name].hypervisor == hypervisor]
        cands = narrowed or cands
    if len(cands) > 1:
        plain = [h for h in cands if h.name == "kata"]
        cands = plain or cands
    return cands[0].name


def netns_ref(inode: int | None, names: Mapping[int, str], *, host: int | None, pid: int | None,
              sandbox_id: str, pod: str | None, pod_namespace: str | None) -> ev.NetnsRef | None:
    if inode is None:
        return None
    return ev.NetnsRef(inode=inode, name=names.get(inode), pid=pid, is_host=inode == host,
                       sandbox_id=sandbox_id, pod=pod, pod_namespace=pod_namespace)


@dataclass(frozen=True, slots=True)
class Assembled:
    event: ev.SandboxStarted
    errors: tuple[kconfig.ConfigError, ...] = ()


def assemble(
    sid: str, *, ts_ns: int, state: StateInfo | None, bundle: BundleInfo | None,
    shim: ProcInfo | None, vmm: ProcInfo | None, vm_pid: int | None,
    handler: str | None, cfg: ev.KataConfig | None, runtime_hint: str | None,
    netns_inode: int | None, names: Mapping[int, str], host_netns: int | None,
    config_changed: bool = False,
) -> Assembled:
    """One SandboxStarted from everything known about a sandbox, with its annotation errors."""
    runtime = (shim.runtime if shim and shim.runtime else None) or (state.runtime if state else None) \
        or runtime_hint or "go"
    annotations: Mapping[str, str] = (bundle.annotations if bundle else None) or (state.annotations if state else {})
    base = cfg or kconfig.default_config(handler or "default", runtime=runtime, assumed=True)
    applied = kconfig.apply_annotations(base, annotations, path=bundle.path if bundle else (state.path if state else ""),
                                        sandbox_id=sid)
    settings = list(applied.settings)
    if state is not None and state.runtime == "rs" and state.settings:  # saved after annotations
        settings = [ev.SettingValue(key=s.key, value=state.settings.get(s.key, s.value),
                                    origin=f"state:{state.path}" if s.key in state.settings else s.origin)
                    for s in settings]
    vals = {s.key: s for s in settings}
    cold = vals["cold_plug_vfio"].value or kconfig.NO_PORT
    vmm_pid = (vmm.pid if vmm else None) or vm_pid or (state.vmm_pid if state else None)
    vfio = vmm.vfio if vmm else (state.vfio_devs if state else ())
    pod = bundle.pod if bundle else (state.annotations.get(CRI_NAME) if state else None)
    pod_ns = bundle.pod_namespace if bundle else (state.annotations.get(CRI_NAMESPACE) if state else None)
    pod_uid = bundle.pod_uid if bundle else (state.annotations.get(CRI_UID) if state else None)
    holder_pid = vmm.pid if vmm else (shim.pid if shim else None)
    evt = ev.SandboxStarted(
        ts_ns=ts_ns, source="kata", sandbox_id=sid, runtime=runtime, handler=handler,
        pod=pod, pod_namespace=pod_ns, pod_uid=pod_uid,
        netns=netns_ref(netns_inode, names, host=host_netns, pid=holder_pid, sandbox_id=sid,
                        pod=pod, pod_namespace=pod_ns),
        shim_pid=shim.pid if shim else None, vmm_pid=vmm_pid,
        cold_plug_vfio=cold, cold_plug_origin=vals["cold_plug_vfio"].origin,
        hot_plug_vfio=vals["hot_plug_vfio"].value or kconfig.NO_PORT,
        pcie_root_port=kconfig._int(vals["pcie_root_port"].value),
        pcie_switch_port=kconfig._int(vals["pcie_switch_port"].value),
        vfs=state.vfs if state else (),
        vmm_vfio_devices=tuple(d.bdf for d in vfio), vmm_vfio_buses=tuple(d.bus for d in vfio),
        state_file=state.path if state else None, config_path=base.path, settings=tuple(settings),
        refused=applied.errors[0].message if applied.refused else "",
        config_changed_since_start=config_changed and not (state is not None and state.settings),
    )
    errors = applied.errors
    if bundle is not None and bundle.key_lines:
        errors = tuple(replace(e, line=bundle.key_lines.get(e.key or "")) for e in errors)
    return Assembled(evt, errors)
