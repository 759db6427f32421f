"""Provides the pure half of Kata sandbox discovery: state files, bundles and QEMU's argv decoded.

Tested on fixture files, and what postmortem's importer runs on copied ones: `decode_persist`
(Go /run/vc/sbs/<id>/persist.json), `decode_state` (runtime-rs /run/kata/<id>/state.json),
`decode_bundle` (containerd's OCI config.json), `decode_qemu_argv` (`-name sandbox-<id>`,
`-device vfio-pci,host=<BDF>,...,bus=`), `vfio_group_of_link`, and `assemble` (one
SandboxStarted per sandbox from everything known). persist.json does not hold the real
cold_plug_vfio (kata-facts §3.1): it is derived from the handler's configuration plus the pod's
enabled annotations; runtime-rs's state.json does hold it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from diag import events as ev
from diag.common.bdf import normalise_bdf
from diag.sources import proc
from diag.sources.kata import effective

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


def _json_object(text: str, path: str) -> Mapping[str, Any] | DecodeError:
    """A state file's text as its top-level JSON object, or what is wrong with it."""
    data, err = _json(text, path)
    if err is not None:
        return err
    if not isinstance(data, Mapping):
        return DecodeError(path, f"{path}: top level is {type(data).__name__}, not an object")
    return data


def _sandbox_vf(phys: Mapping[str, Any], bdf_key: str, driver_key: str) -> ev.SandboxVf | None:
    """A physical endpoint's VF (Go: `BDF`/`Driver`, runtime-rs: `bdf`/`driver`), if its BDF is one."""
    bdf = _s(phys.get(bdf_key))
    if not _BDF_OK.match(bdf):
        return None
    return ev.SandboxVf(bdf=normalise_bdf(bdf), host_driver=_s(phys.get(driver_key)) or None)


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


def decode_persist(text: str, path: str) -> StateInfo | DecodeError:
    """Go runtime persist.json (kata-facts §3.1; CapitalCase keys, no JSON tags)."""
    data = _json_object(text, path)
    if isinstance(data, DecodeError):
        return data
    vfs = [vf for ep in map(_d, _l(_d(data.get("Network")).get("Endpoints")))
           if ep.get("Type") == "physical"
           and (vf := _sandbox_vf(_d(ep.get("Physical")), "BDF", "Driver")) is not None]
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
    data = _json_object(text, path)
    if isinstance(data, DecodeError):
        return data
    vfs = [vf for ep in _l(_d(data.get("resource")).get("endpoint"))
           if (vf := _sandbox_vf(_d(_d(ep).get("physical_endpoint")), "bdf", "driver")) is not None]
    hyp = _d(data.get("hypervisor"))
    hcfg = _d(hyp.get("config"))
    settings = {}
    for key in effective.VFIO_KEYS:
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
    data = _json_object(text, path)
    if isinstance(data, DecodeError):
        return data
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


# ---- Assembly (pure) ----------------------------------------------------------------------------


def handler_for(
    handlers: Sequence[effective.RuntimeHandler], *, shim_exe: str = "", shim_argv0: str = "",
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
    errors: tuple[effective.ConfigError, ...] = ()


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
    base = cfg or effective.default_config(handler or "default", runtime=runtime, assumed=True)
    applied = effective.apply_annotations(base, annotations, path=bundle.path if bundle else (state.path if state else ""),
                                        sandbox_id=sid)
    settings = list(applied.settings)
    if state is not None and state.runtime == "rs" and state.settings:  # saved after annotations
        settings = [ev.SettingValue(key=s.key, value=state.settings.get(s.key, s.value),
                                    origin=f"state:{state.path}" if s.key in state.settings else s.origin)
                    for s in settings]
    vals = {s.key: s for s in settings}
    cold = vals["cold_plug_vfio"].value or effective.NO_PORT
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
        hot_plug_vfio=vals["hot_plug_vfio"].value or effective.NO_PORT,
        pcie_root_port=effective._int(vals["pcie_root_port"].value),
        pcie_switch_port=effective._int(vals["pcie_switch_port"].value),
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

