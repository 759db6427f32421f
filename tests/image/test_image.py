"""The agent image: `make image` builds it reproducibly, and the agent runs from it as the
DaemonSet runs it, against this host.

The run uses the DaemonSet's own pod spec (tests/image/vw_pod.py renders deploy/daemonset.yaml):
with a real `podman run` where this machine allows it, and always with the same container made
by hand from the image's root file system (`podman image mount`, a mount namespace, chroot,
setpriv): on this machine kind every OCI runtime is refused (tests/image/README.md). The only
trigger is a synthetic uevent on an existing device (host-facts.md: harmless).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from diag import __version__
from diag import events as ev
from diag.sinks.journal import journal_records
from tests.agentlog import AgentLog
from tests.conftest import REPO
from tests.image.vw_pod import PodView, chroot_argv, config_maps, pod_view, podman_argv
from tests.kernel.vw_kernel_helpers import build_storm_writer, storm
from tests.unit.sinks.vw_k8s_api import FakeApiServer

pytestmark = pytest.mark.usefixtures("require_root")

IMAGE = f"localhost/vfiowatch:{__version__}"
BUILD = REPO / "deploy" / "build-image.sh"
NONEXISTENT_BDF = "0000:ff:1f.7"


def _podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    res = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: rc={res.returncode}\n{res.stderr[-3000:]}")
    return res.stdout.strip()


def build(**env: str) -> str:
    """Run deploy/build-image.sh (what `make image` runs); return its summary line."""
    res = subprocess.run([str(BUILD)], cwd=REPO, capture_output=True, text=True, timeout=1800,
                         env={**os.environ, **env})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image() -> str:
    if subprocess.run(["which", "podman"], capture_output=True).returncode != 0:
        pytest.fail("podman is missing: deploy/setup-host.sh installs it (make setup)")
    line = build()
    assert line.startswith(f"make image: {IMAGE} ("), line
    return IMAGE


@contextlib.contextmanager
def mounted(image: str) -> Iterator[Path]:
    path = Path(_podman("image", "mount", image))
    try:
        yield path
    finally:
        _podman("image", "unmount", image, check=False)


def test_the_image_holds_the_agent_and_debians_bcc(image: str) -> None:
    """ENTRYPOINT vfiowatch from a venv over Debian's python3-bpfcc; no PyPI `bcc` inside."""
    cfg = json.loads(_podman("image", "inspect", image))[0]["Config"]
    assert cfg["Entrypoint"] == ["vfiowatch"]
    assert cfg["Labels"]["org.opencontainers.image.version"] == __version__
    with mounted(image) as root:
        assert (root / "opt/vfiowatch/bin/vfiowatch").exists()
        assert "include-system-site-packages = true" in (root / "opt/vfiowatch/pyvenv.cfg").read_text()
        assert (root / "usr/lib/python3/dist-packages/bcc/__init__.py").exists()
        site = root / "opt/vfiowatch/lib/python3.11/site-packages"
        dists = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
        assert "vfiowatch" in dists and "bcc" not in dists, dists
        status = (root / "var/lib/dpkg/status").read_text()
        assert "Package: python3-bpfcc\nStatus: install ok installed" in status
        assert not list((root / "dev").iterdir()), "the runtime provides /dev"


def test_the_same_inputs_build_the_same_image(image: str) -> None:
    """Built again from the same inputs, the image is byte-identical (same image id)."""
    tag = f"localhost/vfiowatch-repro-{uuid.uuid4().hex[:8]}:test"
    try:
        build(IMAGE=tag)
        ids = {i: _podman("image", "inspect", "--format", "{{.Id}}", i) for i in (image, tag)}
        assert ids[image] == ids[tag], ids
    finally:
        _podman("rmi", tag, check=False)


# ---- running it ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _modest_ulimits() -> tuple[str, ...]:
    """`--ulimit` options no higher than this process's: podman's defaults raise the limits,
    which a VM that withholds CAP_SYS_RESOURCE refuses. The agent needs few: threads, and a
    socket or two per network namespace."""
    out: list[str] = []
    for name, res, want in (("nofile", resource.RLIMIT_NOFILE, 16384),
                            ("nproc", resource.RLIMIT_NPROC, 4096)):
        n = min(want, resource.getrlimit(res)[1])
        out += ["--ulimit", f"{name}={n}:{n}"]
    return tuple(out)


def _podman_run_options(image: str) -> tuple[tuple[str, ...] | None, list[str]]:
    """The first `podman run` options that start a container here (None if none do), and why
    each one tried before it was refused (the runtime's own error)."""
    refused = []
    for opts in ((), _modest_ulimits(), ("--runtime", "runc", *_modest_ulimits())):
        res = subprocess.run(["podman", "run", "--rm", "--network=none", *opts, image,
                              "--version"], capture_output=True, text=True, timeout=120)
        if res.returncode == 0:
            return opts, refused
        why = (res.stderr.strip().splitlines() or [f"rc={res.returncode}"])[-1]
        refused.append(f"podman run {' '.join(opts)}: {why}".replace("  ", " "))
    return None, refused


class Pod:
    """The agent started from the image with the DaemonSet's spec; its JSON lines parsed."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT)
        self.log = AgentLog(log, self.proc, poll_s=0.1)

    def lines(self) -> list[dict[str, Any]]:
        return self.log.lines()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        return self.log.wait_for(pred, timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._fh.close()
        return rc


@pytest.fixture
def kubelet_dirs() -> Iterator[list[str]]:
    """Like the kubelet for `type: DirectoryOrCreate`: make the missing host directories the pod
    mounts (empty ones in /run: /run/vc, /run/kata, /run/containerd on a host without Kata),
    and remove afterwards those this test made. They must exist on the host because they are
    mounted inside the read-only /host, where no mount point can be created."""
    made: list[str] = []
    yield made
    for d in reversed(made):
        with contextlib.suppress(OSError):
            os.rmdir(d)


def _kubelet_volumes(view: PodView, tmp: Path, api: FakeApiServer) -> dict[str, str]:
    """What the kubelet fills: each ConfigMap volume (the config gets a tiny uevent receive
    buffer here, so that a storm makes the `event-loss` finding the Events path needs), and
    the service account's token and CA (those of the local API server of this test)."""
    out: dict[str, str] = {}
    maps = config_maps()
    for m in view.mounts:
        if m.kind == "configMap":
            d = tmp / f"configmap-{m.name}"
            d.mkdir()
            for key, text in maps[m.source].items():
                (d / key).write_text(text + "\n[sources.uevent]\nrcvbuf = 4096\n")
            out[m.name] = str(d)
    sa = tmp / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(api.token)
    (sa / "ca.crt").write_bytes(api.ca.read_bytes())
    (sa / "namespace").write_text("kube-system")
    out["serviceaccount"] = str(sa)
    return out


def _start(mode: str, image: str, view: PodView, tmp: Path, port: int, made: list[str],
           options: tuple[str, ...], api: FakeApiServer) -> Pod:
    journal_dir = tmp / "hostpath-journal"
    journal_dir.mkdir()
    volume_dirs = _kubelet_volumes(view, tmp, api)
    # The journal's hostPath is a directory of this test (the host's own is left alone);
    # every other hostPath is this host's own.
    host_paths = {"/var/lib/vfiowatch": str(journal_dir)}
    for m in view.mounts:
        if m.host_path and m.host_path not in host_paths and not os.path.exists(m.host_path):
            assert m.host_type == "DirectoryOrCreate", f"{m.host_path} must exist on the node"
            os.mkdir(m.host_path)
            made.append(m.host_path)
    values = {"spec.nodeName": socket.gethostname(), "status.podIP": "127.0.0.1"}
    args = list(view.expand(values))
    # The manifest's fixed port may be taken on a shared machine: same address, a free port.
    i = args.index("--metrics-addr") + 1
    assert args[i] == f"127.0.0.1:{view.port}"
    args[i] = f"127.0.0.1:{port}"
    host, api_port = api.url.removeprefix("https://").split(":")
    env = {**{k: values[v] for k, v in view.env.items()},
           # the kubelet's service environment for the API server (here: this test's)
           "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": api_port}
    if mode == "podman":
        argv = podman_argv(view, image, tuple(args), env=env, host_paths=host_paths,
                           volume_dirs=volume_dirs,
                           options=(*options, "--name", f"vfiowatch-test-{uuid.uuid4().hex[:8]}"))
    else:
        cfg = json.loads(_podman("image", "inspect", image))[0]["Config"]
        rootfs = _podman("image", "mount", image)
        argv = chroot_argv(view, rootfs, tmp / "container", cfg["Entrypoint"], cfg["Env"],
                           tuple(args), env=env, host_paths=host_paths, volume_dirs=volume_dirs)
    return Pod(argv, tmp / "pod.log")


@pytest.mark.parametrize("mode", ["podman", "chroot"])
def test_the_agent_runs_from_the_image_as_the_daemonset_runs_it(
    image: str, mode: str, tmp_path: Path, kubelet_dirs: list[str]
) -> None:
    """Started with the pod spec of deploy/daemonset.yaml: its sources come up (eBPF with only
    the manifest's capabilities), a synthetic uevent becomes a journal record in the hostPath
    directory, a sysfs write is attributed, a finding reaches the (local) Kubernetes API as an
    Event on the node, /metrics and /healthz answer, SIGTERM stops it with 0."""
    options: tuple[str, ...] = ()
    if mode == "podman":
        found, refused = _podman_run_options(image)
        if found is None:
            pytest.skip("podman run is refused on this machine; the chroot run covers it: "
                        + "; ".join(refused))
        options = found
        print(f"\npodman run {' '.join(options)}; refused before: {refused}")
    view = pod_view()
    port = _free_port()
    (tmp_path / "pki").mkdir()
    api = FakeApiServer(tmp_path / "pki", token=f"token-{uuid.uuid4().hex}", versions=["1.25", "1.37"],
                        handler=lambda m, p, b: (201, api.created(b)))
    pod = _start(mode, image, view, tmp_path, port, kubelet_dirs, options, api)
    try:
        started = pod.wait_for(lambda d: d["event"] == "agent_started", timeout=60)
        assert started.get("version", __version__) == __version__
        for src in ("uevent", "links"):
            pod.wait_for(lambda d, s=src: d["event"] == "source_state_changed"
                         and d["source"] == s and d["up"], timeout=60)
        # The Kata source follows the node's journal with the image's journalctl (this host has
        # no journal files, so it says so; it must not say the tool is missing).
        kata = pod.wait_for(lambda d: d["event"] == "source_state_changed"
                            and d["source"] == "kata" and d.get("mode") != "assumed")
        assert "journalctl not found" not in kata.get("reason", ""), kata
        bdf = sorted(os.listdir("/sys/bus/pci/devices"))[0]
        journal = tmp_path / "hostpath-journal" / "journal.jsonl"
        # Re-send until seen: the journal is written by the agent's core a moment later.
        end = time.monotonic() + 30
        while not _synthetic_adds(journal, bdf) and time.monotonic() < end:
            Path(f"/sys/bus/pci/devices/{bdf}/uevent").write_text(f"add {uuid.uuid4()}")
            time.sleep(0.5)
        assert _synthetic_adds(journal, bdf), \
            f"no journal record of the synthetic uevent:\n{pod.log.read_text()[-4000:]}"

        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'vfiowatch_source_up{source="uevent"} 1.0' in body, body[:2000]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        # eBPF with only the manifest's capabilities: bcc compiles against the node's headers
        # (/lib/modules, /usr/src), attaches, and a harmless write (a nonexistent address to a
        # driver's bind file: ENODEV) is attributed to this test's process, its exe read
        # through /proc (CAP_SYS_PTRACE).
        attached = pod.wait_for(lambda d: d["event"] == "source_state_changed"
                                and d["source"] == "ebpf"
                                and d.get("reason", "").startswith("attached in"),
                                timeout=120)  # not "starting: ... attributed once attached"
        assert attached["up"], attached
        bind = "/sys/bus/pci/drivers/virtio-pci/bind"
        end = time.monotonic() + 30
        while not _my_writes(journal, bind) and time.monotonic() < end:
            with contextlib.suppress(OSError), open(bind, "w") as fh:
                fh.write(NONEXISTENT_BDF)
            time.sleep(0.5)
        (w, *_) = _my_writes(journal, bind) or [None]
        assert w is not None, f"no attributed write:\n{pod.log.read_text()[-4000:]}"
        assert w.control == "bind" and w.actor.exe.startswith("/usr/bin/python3"), w
        print(f"\n{mode}: ebpf {attached['mode']}: {w.path} by pid {w.actor.pid} ({w.actor.exe})")

        # Kubernetes Events: a uevent storm overflows the (test-sized) receive buffer, the
        # event-loss finding opens, and the agent posts it on the node, with the pod's token
        # and CA, to the API server the kubelet's environment names.
        storm_exe = build_storm_writer(tmp_path)
        end = time.monotonic() + 60
        while not _posted(api, "EventLoss") and time.monotonic() < end:
            storm(storm_exe, bdf, 20000, f"change {uuid.uuid4()}")
            time.sleep(1)
        (event,) = _posted(api, "EventLoss")[:1]
        assert event["regarding"] == {"apiVersion": "v1", "kind": "Node",
                                      "name": socket.gethostname(), "uid": socket.gethostname()}
        assert event["type"] == "Warning" and event["metadata"]["namespace"] == "default"
        assert not api.problems, api.problems
    finally:
        rc = pod.stop()
        if mode == "chroot":
            _podman("image", "unmount", image, check=False)
    api.close()
    assert rc == 0, pod.log.read_text()[-4000:]
    _, st = journal_records(journal)
    assert st.bad_lines == 0 and not st.truncated_tail
    assert pod.lines()[-1]["event"] == "agent_stopped"


def _posted(api: FakeApiServer, reason: str) -> list[dict[str, Any]]:
    """The Events with this reason the agent created on the local API server."""
    return [r["body"] for r in list(api.requests) if r["method"] == "POST" and r["body"]
            and r["body"].get("reason") == reason]


def _my_writes(journal: Path, path: str) -> list[ev.SysfsWriteObserved]:
    """The journal's attributed writes to `path` by this test's process."""
    if not journal.exists():
        return []
    recs, _ = journal_records(journal)
    return [r for r in recs if isinstance(r, ev.SysfsWriteObserved) and r.path == path
            and r.actor.pid == os.getpid()]


def _synthetic_adds(journal: Path, bdf: str) -> list[ev.DeviceAdded]:
    """The synthetic `add` uevents of `bdf` the journal holds (the test's only trigger)."""
    if not journal.exists():
        return []
    recs, _ = journal_records(journal)
    return [r for r in recs if isinstance(r, ev.DeviceAdded) and r.bdf == bdf and r.synthetic]
