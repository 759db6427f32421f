"""Kata sandboxes and the kata source's rounds: state files, bundles, derived cold_plug_vfio, changes, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources.kata import decode as sb
from diag.sources.kata.source import KataWatcher

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "kata"
SID_GO = "3acfa8826f59dcc9bd876fd171a9abd9536433429c0028b1562c9370740b258f"
SID_RS = "7d2e0c4b9a8f1e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d"
SID_ANN = "b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2"


def copy_case(tmp_path: Path, case: str) -> Path:
    dst = tmp_path / case
    shutil.copytree(FIX / case, dst, symlinks=True)
    return dst


def watcher(root: Path) -> KataWatcher:
    return KataWatcher(HostPaths.at(root), {"journal": False})


def kinds(events: list[ev.Event], kind: str) -> list:
    return [e for e in events if e.kind == kind]


# ---- pure decoders ------------------------------------------------------------------------------


def test_persist_json_physical_endpoint_and_vfio_device() -> None:
    """persist.json gives the VF (BDF, host driver), the VFIO device's bus and the QEMU pid."""
    p = f"/run/vc/sbs/{SID_GO}/persist.json"
    info = sb.decode_persist((FIX / "go-physical" / p.lstrip("/")).read_text(), p)
    assert isinstance(info, sb.StateInfo)
    assert info.vfs == (ev.SandboxVf(bdf="0000:01:10.0", host_driver="igbvf"),)
    assert info.vfio_devs == (sb.VfioDev(bdf="0000:01:10.0", bus="rp0", port="", cold_plug=True),)
    assert (info.vmm_pid, info.hypervisor) == (2462877, "qemu")
    assert info.annotations["io.kubernetes.cri.sandbox-name"] == "sriov-pod"
    assert info.settings == {}  # Go never fills ColdPlugVFIO: derived, not read


def test_state_json_runtime_rs() -> None:
    """state.json gives the VF and the saved cold_plug_vfio (runtime-rs saves its config)."""
    p = f"/run/kata/{SID_RS}/state.json"
    info = sb.decode_state((FIX / "rs-state" / p.lstrip("/")).read_text(), p)
    assert isinstance(info, sb.StateInfo)
    assert info.vfs == (ev.SandboxVf(bdf="0000:01:10.1", host_driver="iavf"),)
    assert info.settings["cold_plug_vfio"] == "root-port" and info.vmm_pid is None


def test_qemu_argv() -> None:
    """`-name sandbox-<id>` and each `-device vfio-pci,host=...,bus=...` (with `,,` escapes)."""
    argv = ["/opt/kata/bin/qemu-system-x86_64", "-name", f"sandbox-{SID_GO},debug-threads=on", "-machine", "q35",
            "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=0,slot=0",
            "-device", "vfio-pci,host=0000:01:10.0,id=vfio-1,x-pci-vendor-id=0x8086,x-pci-device-id=0x10ca,bus=rp0",
            "-device", "vfio-pci,host=84:01.1,bus=<unknown PCIePortBusPrefix: >0,romfile=a,,b"]
    qa = sb.decode_qemu_argv(argv)
    assert qa.sandbox_id == SID_GO
    assert qa.vfio == (sb.VfioDev(bdf="0000:01:10.0", bus="rp0"),
                       sb.VfioDev(bdf="0000:84:01.1", bus="<unknown PCIePortBusPrefix: >0"))


def test_vfio_link_targets() -> None:
    """Only `/dev/vfio/<N>` names a group; the container node and look-alikes do not."""
    assert sb.vfio_group_of_link("/dev/vfio/42") == 42
    for t in ("/dev/vfio/vfio", "/dev/vfio/42 (deleted)", "/dev/vfio/devices/vfio0", "socket:[1]"):
        assert sb.vfio_group_of_link(t) is None


@pytest.mark.parametrize("text", [
    "", "{", '{"Network": ', "[]", "null", '{"Network": {"Endpoints": [null, 1, {"Type": "physical", "Physical": 5}]}}',
    '{"Devices": [{"Type": "vfio", "VFIODevs": [{"BDF": 7}]}], "HypervisorState": {"Pid": "abc"}}',
    '{"HypervisorState": {"Pid": 99999999999}, "Config": {"ContainerConfigs": [{"Annotations": []}]}}',
    '{"Network": {"Endpoints": [{"Type": "physical", "Physical": {"BDF": "../../etc/passwd", "Driver": "x"}}]}}',
])
def test_persist_garbage(text: str) -> None:
    """Malformed or absurd persist.json: a DecodeError with position, or a harmless empty view."""
    out = sb.decode_persist(text, "/run/vc/sbs/x/persist.json")
    if isinstance(out, sb.DecodeError):
        assert (out.path in out.message and "line" in out.message) or "top level" in out.message
    else:
        assert out.vmm_pid is None and out.vfs == ()


def test_truncated_json_says_so() -> None:
    """A file cut mid-write names line and column and says it looks truncated."""
    full = (FIX / "go-physical" / f"run/vc/sbs/{SID_GO}/persist.json").read_text()
    out = sb.decode_persist(full[: len(full) // 2], "/p.json")
    assert isinstance(out, sb.DecodeError) and out.line and out.column and "truncated" in out.message


# ---- whole rounds on fixture trees ----------------------------------------------------------------


def test_go_sandbox_with_physical_endpoint() -> None:
    """Go sandbox: pod identity from the bundle, VF from persist.json, cold_plug_vfio derived from the handler's file."""
    evs = watcher(FIX / "go-physical").step(1, 0.0, force=True)
    (s,) = kinds(evs, "sandbox_started")
    assert (s.sandbox_id, s.runtime, s.handler) == (SID_GO, "go", "kata-qemu")
    assert (s.pod, s.pod_namespace, s.pod_uid) == ("sriov-pod", "default", "9d2b6a3e-1c4f-4e8a-b7d5-3f2a1c0e9b8d")
    assert s.vfs == (ev.SandboxVf(bdf="0000:01:10.0", host_driver="igbvf"),)
    assert (s.vmm_pid, s.vmm_vfio_devices, s.vmm_vfio_buses) == (2462877, ("0000:01:10.0",), ("rp0",))
    assert s.cold_plug_vfio == "root-port"
    assert s.cold_plug_origin == "file:/opt/kata/share/defaults/kata-containers/runtimes/qemu/configuration-qemu.toml"
    assert s.state_file == f"/run/vc/sbs/{SID_GO}/persist.json" and s.refused == ""


def test_rs_sandbox_uses_saved_config() -> None:
    """runtime-rs sandbox: its state.json's cold_plug_vfio, origin `state:`."""
    (s,) = kinds(watcher(FIX / "rs-state").step(1, 0.0, force=True), "sandbox_started")
    assert (s.runtime, s.handler, s.pod, s.cold_plug_vfio, s.pcie_root_port) == (
        "rs", "kata-qemu-runtime-rs", "rs-pod", "root-port", 4)
    assert s.cold_plug_origin == f"state:/run/kata/{SID_RS}/state.json"


def test_enabled_annotation_sets_cold_plug() -> None:
    """An enabled annotation changes the sandbox's cold_plug_vfio, origin annotation; no state file yet."""
    evs = watcher(FIX / "annotation-enabled").step(1, 0.0, force=True)
    (s,) = kinds(evs, "sandbox_started")
    assert (s.cold_plug_vfio, s.pcie_root_port, s.state_file) == ("root-port", 2, None)
    assert s.cold_plug_origin == "annotation:io.katacontainers.config.hypervisor.cold_plug_vfio"
    assert kinds(evs, "kata_config_invalid") == []


def test_not_enabled_annotation_is_invalid_with_line() -> None:
    """A non-enabled annotation: KataConfigInvalid naming bundle file, line and key; the file's value stays."""
    evs = watcher(FIX / "annotation-not-enabled").step(1, 0.0, force=True)
    (bad,) = kinds(evs, "kata_config_invalid")
    key = "io.katacontainers.config.hypervisor.cold_plug_vfio"
    assert bad.message == f"annotation {key} is not enabled"
    assert (bad.key, bad.sandbox_id, bad.handler) == (key, SID_ANN, "kata")
    assert bad.path.endswith(f"/k8s.io/{SID_ANN}/config.json")
    text = (FIX / "annotation-not-enabled" / bad.path.lstrip("/")).read_text().splitlines()
    assert key in text[bad.line - 1]
    (s,) = kinds(evs, "sandbox_started")
    assert s.cold_plug_vfio == "no-port" and s.refused == bad.message


def test_no_kata_host() -> None:
    """No Kata: one assumed default configuration, no sandboxes."""
    evs = watcher(FIX / "no-kata").step(1, 0.0, force=True)
    (c,) = kinds(evs, "kata_config_loaded")
    assert c.config.assumed and c.config.cold_plug_vfio == "no-port" and kinds(evs, "sandbox_started") == []


def test_second_round_is_quiet() -> None:
    """Nothing changed: the next round emits nothing."""
    w = watcher(FIX / "go-physical")
    w.step(1, 0.0, force=True)
    assert w.step(2, 10.0) == []


# ---- changes -----------------------------------------------------------------------------------------


def test_dropin_change_reloads_and_running_sandbox_keeps_its_config(tmp_path: Path) -> None:
    """A new drop-in is noticed on the next config round (changed=True); the running sandbox keeps root-port."""
    root = copy_case(tmp_path, "go-physical")
    w = watcher(root)
    w.step(1, 0.0, force=True)
    dd = root / "opt/kata/share/defaults/kata-containers/runtimes/qemu/config.d"
    dd.mkdir(exist_ok=True)
    (dd / "99-off.toml").write_text('[hypervisor.qemu]\ncold_plug_vfio = "no-port"\n')
    evs = w.step(2, 1.0)
    (c,) = kinds(evs, "kata_config_loaded")
    assert c.changed and c.config.cold_plug_vfio == "no-port"
    assert c.config.dropins == ("/opt/kata/share/defaults/kata-containers/runtimes/qemu/config.d/99-off.toml",)
    assert kinds(evs, "sandbox_started") == []
    assert w.sandboxes[SID_GO].cold_plug_vfio == "root-port"


def test_broken_edit_keeps_last_good_view(tmp_path: Path) -> None:
    """Breaking the file mid-edit: KataConfigInvalid with line; the last good configuration stays; fixing it reloads."""
    root = copy_case(tmp_path, "dropins")
    w = watcher(root)
    w.step(1, 0.0, force=True)
    good = w.configs["kata"]
    f = root / "usr/share/defaults/kata-containers/config.d/10-vfio.toml"
    f.write_text('[hypervisor.qemu]\ncold_plug_vfio = "root-port\n')
    evs = w.step(2, 1.0)
    (bad,) = kinds(evs, "kata_config_invalid")
    assert (bad.path, bad.line, bad.handler) == ("/usr/share/defaults/kata-containers/config.d/10-vfio.toml", 2, "kata")
    assert kinds(evs, "kata_config_loaded") == [] and w.configs["kata"] == good
    assert w.step(3, 2.0) == []  # reported once
    f.write_text('[hypervisor.qemu]\ncold_plug_vfio = "bridge-port"\n')
    (c,) = kinds(w.step(4, 3.0), "kata_config_loaded")
    assert c.changed and c.config.cold_plug_vfio == "bridge-port"


def test_sandbox_start_and_stop(tmp_path: Path) -> None:
    """A new state dir is a SandboxStarted on the next sandbox round; its removal a SandboxStopped."""
    root = copy_case(tmp_path, "dropins")
    w = watcher(root)
    assert kinds(w.step(1, 0.0, force=True), "sandbox_started") == []
    sid = "c" * 64
    (root / f"run/vc/sbs/{sid}").mkdir(parents=True)
    (s,) = kinds(w.step(2, 0.5), "sandbox_started")
    assert (s.sandbox_id, s.handler, s.cold_plug_vfio, s.state_file) == (sid, "kata", "root-port", None)
    shutil.rmtree(root / f"run/vc/sbs/{sid}")
    (gone,) = kinds(w.step(3, 1.0), "sandbox_stopped")
    assert gone.sandbox_id == sid


def test_partial_write_keeps_last_good_state(tmp_path: Path) -> None:
    """persist.json caught half-written: DecodeFailed naming file and position; the sandbox keeps its VF."""
    root = copy_case(tmp_path, "go-physical")
    w = watcher(root)
    w.step(1, 0.0, force=True)
    p = root / f"run/vc/sbs/{SID_GO}/persist.json"
    full = p.read_text()
    p.write_text(full[:300])
    evs = w.step(2, 0.5)
    (df,) = kinds(evs, "decode_failed")
    assert f"/run/vc/sbs/{SID_GO}/persist.json: line" in df.reason and "keeping the last good state" in df.reason
    assert w.sandboxes[SID_GO].vfs[0].bdf == "0000:01:10.0"
    p.write_text(full.replace('"igbvf"', '"iavf"'))
    (s,) = kinds(w.step(3, 1.0), "sandbox_started")
    assert s.vfs[0].host_driver == "iavf"


def test_unreadable_state_and_bundle(tmp_path: Path) -> None:
    """A directory or FIFO where a JSON file should be: an error naming it, no hang, no crash."""
    root = copy_case(tmp_path, "go-physical")
    p = root / f"run/vc/sbs/{SID_GO}/persist.json"
    p.unlink()
    p.mkdir()
    b = root / f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{SID_GO}/config.json"
    b.unlink()
    os.mkfifo(b)
    evs = watcher(root).step(1, 0.0, force=True)
    reasons = [e.reason for e in kinds(evs, "decode_failed")]
    assert any("persist.json: cannot read" in r for r in reasons)
    assert any("config.json: cannot read" in r and "not a regular file" in r for r in reasons)
    (s,) = kinds(evs, "sandbox_started")
    assert s.sandbox_id == SID_GO and s.pod is None


def test_absurd_bundle_values(tmp_path: Path) -> None:
    """Hostile annotation values are carried as data, never executed or crashing; bad port counts are Kata errors."""
    root = copy_case(tmp_path, "annotation-enabled")
    b = root / f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{SID_ANN}/config.json"
    spec = json.loads(b.read_text())
    spec["annotations"]["io.katacontainers.config.hypervisor.pcie_root_port"] = "99999999999999999999999"
    spec["annotations"]["io.kubernetes.cri.sandbox-name"] = "\x1b[31mevil\n"
    b.write_text(json.dumps(spec))
    evs = watcher(root).step(1, 0.0, force=True)
    (bad,) = kinds(evs, "kata_config_invalid")
    assert "Error parsing annotation for io.katacontainers.config.hypervisor.pcie_root_port" in bad.message
    (s,) = kinds(evs, "sandbox_started")
    assert s.pod == "\x1b[31mevil\n"


def test_handler_for_disambiguates() -> None:
    """Same shim binary for two handlers: the runtime-handler annotation, then the hypervisor, decide."""
    from diag.sources.kata.effective import RuntimeHandler
    shim = "/opt/kata/bin/containerd-shim-kata-v2"
    hs = [RuntimeHandler(name="kata-clh", runtime_path=shim), RuntimeHandler(name="kata-qemu", runtime_path=shim)]
    assert sb.handler_for(hs, shim_exe=shim, annotations={sb.CRI_RUNTIME_HANDLER: "kata-qemu"}) == "kata-qemu"
    cfgs = {"kata-clh": ev.KataConfig(handler="kata-clh", hypervisor="clh"),
            "kata-qemu": ev.KataConfig(handler="kata-qemu", hypervisor="qemu")}
    assert sb.handler_for(hs, shim_exe=shim, hypervisor="qemu", configs=cfgs) == "kata-qemu"
    derived = [RuntimeHandler(name="kata-fc", runtime_type="io.containerd.kata-fc.v2"), *hs]
    assert sb.handler_for(derived, shim_exe="/usr/local/bin/containerd-shim-kata-fc-v2") == "kata-fc"


def test_a_shim_caught_mid_exec_is_found_once_its_argv_is_there(tmp_path: Path) -> None:
    """A /proc scan that reads a new shim between the comm and the argv of its exec (comm
    `containerd-shim`, empty cmdline) finds it on the next scan: the empty answer is not cached."""
    from diag.sources.kata import sandboxes

    root = tmp_path / "root"
    pid = root / "proc" / "4242"
    pid.mkdir(parents=True)
    (pid / "comm").write_text("containerd-shim\n")
    (pid / "cmdline").write_bytes(b"")  # the exec has not loaded the program yet
    (pid / "exe").symlink_to("/opt/kata/bin/containerd-shim-kata-v2")
    paths = HostPaths.at(root)
    cache = sandboxes.ProcCache(full_every=3)
    assert sandboxes.scan_processes(paths, cache).shims == {}
    argv = ["/opt/kata/bin/containerd-shim-kata-v2", "-namespace", "k8s.io", "-id", SID_GO]
    (pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    scan = sandboxes.scan_processes(paths, cache)
    assert [(sid, i.pid) for sid, i in scan.shims.items()] == [(SID_GO, 4242)]
    assert sandboxes.scan_processes(paths, cache).shims.keys() == {SID_GO}  # then known, not read again


def test_process_events_keep_the_device_plugins_so_the_exposure_lists_no_proc(tmp_path: Path) -> None:
    """By events, ProcWatch keeps the SR-IOV device plugins (seed, exec, exit) and says when they
    changed; the exposure takes them as the comms to look at instead of reading every pid's."""
    from diag.sources.kata import sandboxes

    root = tmp_path / "root"
    for pid, comm in ((10, "sriovdp"), (11, "bash"), (12, "bash")):
        (root / f"proc/{pid}").mkdir(parents=True)
        (root / f"proc/{pid}/comm").write_text(comm + "\n")
    w = KataWatcher(HostPaths.at(root), {"journal": False})
    pw = w.procwatch = sandboxes.ProcWatch(w.paths)
    pw.seed()
    assert (pw.plugins, pw.plugins_changed) == ({10: "sriovdp"}, True)
    assert w._comms() == {10: "sriovdp"} and not pw.plugins_changed
    (root / "proc/12/comm").write_text("sriovdp\n")
    assert pw.exec(12) is False and pw.plugins == {10: "sriovdp", 12: "sriovdp"} and pw.plugins_changed
    pw.plugins_changed = False
    assert pw.exec(11) is False and not pw.plugins_changed  # another process's exec: no change
    pw.exit(10)
    assert pw.plugins == {12: "sriovdp"} and pw.plugins_changed
