"""The DaemonSet's pod as the agent would see it, and two ways to run the image that way.

`pod_view()` reads deploy/daemonset.yaml once into what a container runtime would give the
container: host namespaces, each mount (host path or tmpfs, read-only or not, propagation), the
capabilities, the arguments. `podman_argv()` turns it into a real `podman run`; `chroot_argv()`
into the same set-up made by hand (a mount namespace, the image's root file system, bind mounts,
chroot, setpriv), for machines where `podman run` is refused (see tests/image/README.md).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from tests.conftest import REPO

DAEMONSET = REPO / "deploy" / "daemonset.yaml"


@dataclass(frozen=True)
class Mount:
    """One volumeMount joined with its volume."""

    path: str
    """Where the container sees it."""
    name: str
    host_path: str | None
    """hostPath volumes: the node's path; None for emptyDir."""
    host_type: str
    read_only: bool
    propagation: str
    """`None`, `HostToContainer` or `Bidirectional` (Kubernetes' names)."""
    memory: bool = False
    size_limit: str = ""
    kind: str = "hostPath"
    """The volume's type: `hostPath`, `emptyDir`, `configMap`."""
    source: str = ""
    """For a configMap volume, the ConfigMap's name."""


@dataclass(frozen=True)
class PodView:
    """What the runtime gives the one container of the DaemonSet's pod."""

    image: str
    host_pid: bool
    host_network: bool
    host_ipc: bool
    mounts: tuple[Mount, ...]
    caps: frozenset[str]
    """Capabilities added (without CAP_), after dropping ALL."""
    drop_all: bool
    privileged: bool
    read_only_root: bool
    run_as_user: int | None
    no_new_privs: bool
    seccomp: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    """Variable -> the fieldPath it is taken from (the downward API)."""
    port: int
    service_account: str
    """The pod's service account ("" when its token is not mounted)."""

    def mount_for(self, path: str) -> Mount | None:
        """The mount that serves `path` inside the container (the deepest one), or None."""
        best: Mount | None = None
        for m in self.mounts:
            if (path == m.path or path.startswith(m.path.rstrip("/") + "/")) and (
                best is None or len(m.path) > len(best.path)
            ):
                best = m
        return best

    def host_path_of(self, path: str) -> str | None:
        """The node's path behind a container path, through hostPath mounts; None otherwise."""
        m = self.mount_for(path)
        if m is None or m.host_path is None:
            return None
        rest = PurePosixPath(path).relative_to(m.path)
        return str(PurePosixPath(m.host_path) / rest)

    def writable(self, path: str) -> bool:
        """Whether the container can write at `path` (its mount, else the root file system)."""
        m = self.mount_for(path)
        return (not m.read_only) if m is not None else not self.read_only_root

    def expand(self, values: Mapping[str, str]) -> tuple[str, ...]:
        """The arguments with `$(VAR)` replaced from `values` (fieldPath -> value)."""
        env = {k: values[v] for k, v in self.env.items()}
        return tuple(re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a) for a in self.args)


def load_manifest(path: Path = DAEMONSET) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def daemonset(path: Path = DAEMONSET) -> dict[str, Any]:
    (ds,) = [d for d in load_manifest(path) if d["kind"] == "DaemonSet"]
    return ds


def pod_view(path: Path = DAEMONSET) -> PodView:
    spec = daemonset(path)["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = []
    for m in c["volumeMounts"]:
        v = vols[m["name"]]
        hp = v.get("hostPath")
        ed = v.get("emptyDir")
        kind = next(k for k in ("hostPath", "emptyDir", "configMap") if k in v)
        mounts.append(Mount(
            path=m["mountPath"], name=m["name"],
            host_path=hp["path"] if hp else None, host_type=(hp or {}).get("type", ""),
            read_only=bool(m.get("readOnly", False)) or kind == "configMap",
            propagation=m.get("mountPropagation", "None"),
            memory=bool(ed and ed.get("medium") == "Memory"),
            size_limit=(ed or {}).get("sizeLimit", ""),
            kind=kind, source=v.get("configMap", {}).get("name", ""),
        ))
    sc = c.get("securityContext", {})
    caps = sc.get("capabilities", {})
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
           for e in c.get("env", []) if "fieldRef" in e.get("valueFrom", {})}
    return PodView(
        image=c["image"],
        host_pid=bool(spec.get("hostPID")), host_network=bool(spec.get("hostNetwork")),
        host_ipc=bool(spec.get("hostIPC")),
        mounts=tuple(mounts),
        caps=frozenset(caps.get("add", [])), drop_all="ALL" in caps.get("drop", []),
        privileged=bool(sc.get("privileged", False)),
        read_only_root=bool(sc.get("readOnlyRootFilesystem", False)),
        run_as_user=sc.get("runAsUser"),
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        seccomp=sc.get("seccompProfile", {}).get("type", "RuntimeDefault"),
        args=tuple(c.get("args", [])), env=env,
        port={p["name"]: p["containerPort"] for p in c.get("ports", [])}.get("metrics", 0),
        service_account=(spec.get("serviceAccountName", "default")
                         if spec.get("automountServiceAccountToken", True) else ""),
    )


def _size_bytes(limit: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([KMG]i?)?", limit)
    assert m, limit
    return int(m[1]) * units.get(m[2] or "", 1)


SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where the kubelet mounts the service account's token, ca.crt and namespace."""


def config_maps(path: Path = DAEMONSET) -> dict[str, dict[str, str]]:
    """The manifest's ConfigMaps: name -> {key: content}."""
    return {d["metadata"]["name"]: dict(d.get("data", {}))
            for d in load_manifest(path) if d["kind"] == "ConfigMap"}


def podman_argv(view: PodView, image: str, args: tuple[str, ...], *,
                env: Mapping[str, str], host_paths: Mapping[str, str],
                volume_dirs: Mapping[str, str] = {}, options: tuple[str, ...] = ()) -> list[str]:
    """`podman run` of `image` as the DaemonSet runs it. host_paths: the node paths to use;
    volume_dirs: a directory for each volume the kubelet would fill (configMap, the service
    account as `serviceaccount`); options: more `podman run` options (runtime, limits)."""
    cmd = ["podman", "run", "--rm", *options]
    if view.host_pid:
        cmd.append("--pid=host")
    if view.host_network:
        cmd += ["--network=host", "--uts=host"]
    if view.host_ipc:
        cmd.append("--ipc=host")
    if view.drop_all:
        cmd.append("--cap-drop=ALL")
    cmd += [f"--cap-add=CAP_{c}" for c in sorted(view.caps)]
    if view.privileged:
        cmd.append("--privileged")
    if view.read_only_root:
        cmd += ["--read-only", "--read-only-tmpfs=false"]
    if view.run_as_user is not None:
        cmd.append(f"--user={view.run_as_user}")
    if view.no_new_privs:
        cmd += ["--security-opt", "no-new-privileges"]
    if view.seccomp == "Unconfined":
        cmd += ["--security-opt", "seccomp=unconfined"]
    for m in view.mounts:
        if m.kind == "emptyDir":
            size = f",tmpfs-size={_size_bytes(m.size_limit)}" if m.size_limit else ""
            cmd += ["--mount", f"type=tmpfs,destination={m.path}{size}"]
            continue
        if m.kind != "hostPath":
            cmd += ["-v", f"{volume_dirs[m.name]}:{m.path}:ro"]
            continue
        opts = ["ro"] if m.read_only else ["rw"]
        opts.append({"HostToContainer": "rslave", "Bidirectional": "rshared"}.get(m.propagation,
                                                                                   "rprivate"))
        cmd += ["-v", f"{host_paths.get(m.host_path, m.host_path)}:{m.path}:{','.join(opts)}"]
    if view.service_account and "serviceaccount" in volume_dirs:
        cmd += ["-v", f"{volume_dirs['serviceaccount']}:{SA_PATH}:ro"]
    for k, v in env.items():
        cmd += ["-e", f"{k}={v}"]
    return [*cmd, image, *args]


def in_root(rootfs: str, path: str) -> str:
    """`path` inside the container with the image's symlinks followed inside `rootfs` (as
    runc's securejoin does): /var/run/x -> /run/x. Never a path outside the root: a mount
    target must not follow an absolute symlink out to this machine's own directories."""
    parts = [p for p in path.split("/") if p]
    out: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            out = out[:-1]
            continue
        if part == ".":
            continue
        here = Path(rootfs, *out, part)
        if here.is_symlink():
            hops += 1
            assert hops < 40, f"symlink loop at {path}"
            target = str(here.readlink())
            if target.startswith("/"):
                out = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        out.append(part)
    return "/" + "/".join(out)


def chroot_argv(view: PodView, rootfs: str, work: Path, entrypoint: list[str],
                image_env: list[str], args: tuple[str, ...], *,
                env: Mapping[str, str], host_paths: Mapping[str, str],
                volume_dirs: Mapping[str, str] = {}) -> list[str]:
    """The same container made by hand: a new mount (and IPC) namespace, nothing else new.

    The image's root file system (`podman image mount`) is the lower layer of an overlay whose
    upper layer only receives the mount points, then the root is remounted read-only; /proc is
    the host PID namespace's, /sys a read-only sysfs of the host network namespace, /dev a tmpfs
    with the usual nodes; each volume is bind-mounted (read-only ones remounted read-only, at
    the top level only, as Kubernetes does without recursive read-only mounts), emptyDir
    Memory is a tmpfs; then chroot, and setpriv keeps only the manifest's capabilities.
    """
    r = work / "root"
    for d in ("root", "upper", "work"):
        (work / d).mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    lines = [
        "set -eu",
        f"R={q(str(r))}",
        f"mount -t overlay overlay -o lowerdir={q(rootfs)},upperdir={q(str(work / 'upper'))},"
        f"workdir={q(str(work / 'work'))} \"$R\"",
        'mkdir -p "$R/proc" "$R/sys" "$R/dev"',
        'mount -t proc -o nosuid,nodev,noexec proc "$R/proc"',
        'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"',
        'mount -t tmpfs -o nosuid,mode=755,size=65536k tmpfs "$R/dev"',
        'for d in null zero full random urandom tty; do touch "$R/dev/$d"; '
        'mount --bind "/dev/$d" "$R/dev/$d"; done',
        'mkdir "$R/dev/shm" && mount -t tmpfs -o nosuid,nodev,noexec shm "$R/dev/shm"',
        'ln -s /proc/self/fd "$R/dev/fd"',
    ]
    if view.host_network:  # the runtime bind-mounts the node's resolver files
        lines += ['for f in hosts resolv.conf; do touch "$R/etc/$f"; '
                  'mount --bind -o ro "/etc/$f" "$R/etc/$f"; done']
    binds = [(m, host_paths.get(m.host_path, m.host_path) if m.host_path else
              volume_dirs.get(m.name, "")) for m in view.mounts]
    if view.service_account and "serviceaccount" in volume_dirs:
        binds.append((Mount(path=SA_PATH, name="serviceaccount", host_path=None, host_type="",
                            read_only=True, propagation="None", kind="projected"),
                      volume_dirs["serviceaccount"]))
    for m, source in binds:
        tgt = f'"$R"{q(in_root(rootfs, m.path))}'
        lines.append(f"mkdir -p {tgt}")
        if m.kind == "emptyDir":
            size = f",size={_size_bytes(m.size_limit)}" if m.size_limit else ""
            lines.append(f"mount -t tmpfs -o nosuid,nodev{size} tmpfs {tgt}")
            continue
        src = q(source)
        lines.append(f"mount --rbind {src} {tgt}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {tgt}")
        lines.append(f"mount --make-{'rslave' if m.propagation == 'HostToContainer' else 'rprivate'} {tgt}")
    if view.read_only_root:
        lines.append('mount -o remount,bind,ro "$R"')
    caps = ",".join(["-all", *(f"+{c.lower()}" for c in sorted(view.caps))])
    setpriv = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}",
               f"--ambient-caps={caps}"]
    if view.run_as_user is not None:
        setpriv += [f"--reuid={view.run_as_user}", f"--regid={view.run_as_user}",
                    "--clear-groups"]
    if view.no_new_privs:
        setpriv.append("--no-new-privs")
    envs = [*image_env, *(f"{k}={v}" for k, v in env.items())]
    final = ["chroot", str(r), *setpriv, "env", "-i", *envs, *entrypoint, *args]
    lines.append("exec " + " ".join(q(a) for a in final))
    unshare = ["unshare", "--mount", "--propagation", "slave"]
    if not view.host_ipc:
        unshare.append("--ipc")
    return [*unshare, "sh", "-c", "\n".join(lines)]
