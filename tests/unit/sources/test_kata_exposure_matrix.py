"""The issue's matrix through the agent: version timeline x no-port/drop-in/annotation x VFs/none,
each host tree read by the Kata source, judged by rule kata-vfio-exposure and shown by `check`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from diag import cli
from diag import events as ev
from diag.common.paths import HostPaths
from diag.core.correlator import Correlator
from diag.sources.kata.preflight import kata_exposure
from diag.sources.kata.source import KataWatcher
from tests.conftest import FIXTURES
from tests.unit.sources.test_kata_exposure_trees import EXPECTED, VERSION_SOURCE

TREES = FIXTURES / "kata-exposure"
SYSFS = {"vfs": FIXTURES / "sysfs" / "sriov-lab", "none": FIXTURES / "sysfs" / "host-virtio"}


def host(tmp: Path, tree: str, inv: str) -> Path:
    """A host tree: the Kata tree with the sysfs of a host with a VF on igbvf (or with no VF)."""
    root = tmp / f"{tree}-{inv}"
    shutil.copytree(TREES / tree, root, symlinks=True)
    shutil.copytree(SYSFS[inv], root, symlinks=True, dirs_exist_ok=True)
    return root


def findings(root: Path) -> list[ev.Finding]:
    """The exposure findings the core opens from the source's first round."""
    w = KataWatcher(HostPaths.at(root), {"journal": False, "kmsg": False})
    c = Correlator()
    for e in w.step(time.time_ns(), force=True):
        c.feed(e)
    return [f for f in c.active if f.rule == "kata-vfio-exposure"]


@pytest.mark.parametrize("inv", ["vfs", "none"])
@pytest.mark.parametrize("tree", sorted(EXPECTED))
def test_each_host_opens_its_expected_findings_and_check_line(tree: str, inv: str, tmp_path: Path) -> None:
    """With a VF: one finding per expected (issue, severity), naming the version's source; the check line
    fails (error) or warns (warning) naming each exposure and its fix. No VF: no finding, a passing line
    that says which issue it would be exposed to once a VF can be given."""
    root = host(tmp_path, tree, inv)
    got = findings(root)
    want = EXPECTED[tree] if inv == "vfs" else []
    assert sorted((dict(f.labels)["issue"], f.severity.label) for f in got) == sorted(want)
    src, ver = VERSION_SOURCE[tree.split("-")[0]]
    for f in got:
        labels = dict(f.labels)
        assert (labels["version_source"] or None, labels["version"] or None) == (src, ver)
    line = kata_exposure(HostPaths.at(root))
    assert line.name == "kata exposure"
    if want:
        assert line.status == ("fail" if any(s == "error" for _, s in want) else "warn")
        for issue, _ in want:
            assert ("exposed to Kata #" + issue if issue.isdigit() else "an unknown Kata version") in line.detail
        if src:
            assert f"Kata {ver}" in line.detail and (f"{src} " in line.detail or "kata-deploy" in line.detail)
        assert line.fix
    else:
        assert line.ok, line.detail
        for issue, _ in EXPECTED[tree]:
            assert f"would be exposed to Kata #{issue}" in line.detail or "unknown Kata version" in line.detail
        if not EXPECTED[tree]:
            assert "not exposed to a known Kata VFIO bug" in line.detail


def test_done_when_kata_38_from_packages_no_port_and_vfs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's done-when: `vfiowatch check` names #10162, dpkg as the version's source and the fix;
    with the suggested drop-in the line passes."""
    root = host(tmp_path, "go38-noport", "vfs")
    cli.main(["--root", str(root), "check"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "kata exposure" in x)
    assert line.startswith("✗ kata exposure") and "exposed to Kata #10162 (error)" in line
    assert "read from dpkg kata-containers 3.8.0-1 (/var/lib/dpkg/status) owns /usr/bin/containerd-shim-kata-v2" in line
    fix = out.splitlines()[out.splitlines().index(line) + 1]
    assert 'cold_plug_vfio = "root-port"; pcie_root_port = 1' in fix
    dropin = root / "usr/share/defaults/kata-containers/config.d/90-vfiowatch-vfio-cold-plug.toml"
    dropin.parent.mkdir()
    dropin.write_text('[hypervisor.qemu]\ncold_plug_vfio = "root-port"\npcie_root_port = 1\n')
    cli.main(["--root", str(root), "check"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "kata exposure" in x)
    assert line.startswith("✓ kata exposure") and "not exposed to a known Kata VFIO bug" in line


def test_the_issues_literal_drop_in_is_not_enough(tmp_path: Path) -> None:
    """cold_plug_vfio = "root-port" alone (pcie_root_port 0): #10162 is gone but Bus 'rp0' (#5676) is named."""
    root = host(tmp_path, "go38-noport", "vfs")
    d = root / "usr/share/defaults/kata-containers/config.d"
    d.mkdir()
    (d / "50-root-port.toml").write_text('[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n')
    line = kata_exposure(HostPaths.at(root))
    assert "Kata #5676" in line.detail and "Kata #10162" not in line.detail
    assert "pcie_root_port = 1" in line.fix


def test_kata_binaries_are_read_never_run(tmp_path: Path) -> None:
    """A shim that would leave a mark if executed leaves none after check and snapshot."""
    root = host(tmp_path, "unknown-noport", "vfs")
    mark = tmp_path / "ran"
    shim = root / "usr/local/bin/containerd-shim-kata-v2"
    shim.write_text(f"#!/bin/sh\ntouch {mark}\n")
    shim.chmod(0o755)
    assert cli.main(["--root", str(root), "check"]) in (0, 1)
    assert cli.main(["--root", str(root), "snapshot"]) == 0
    assert not mark.exists()


def test_an_unchanged_binary_is_not_read_again(tmp_path: Path) -> None:
    """Rounds re-stat the shim; only a changed stat makes the source read it again."""
    root = host(tmp_path, "unknown-noport", "vfs")
    w = KataWatcher(HostPaths.at(root), {"journal": False, "kmsg": False, "exposure_interval_s": 0})
    w.step(1, 0.0, force=True)
    first = w.exposure_watch.binaries.reads
    scans = w.exposure_watch.inventory_reads
    for i in range(5):
        assert w.step(2 + i, 10.0 + i) == []
    assert (w.exposure_watch.binaries.reads, w.exposure_watch.inventory_reads) == (first, scans)
    shim = root / "usr/local/bin/containerd-shim-kata-v2"
    shim.write_bytes(shim.read_bytes() + b"\n")
    w.step(10, 20.0)
    assert w.exposure_watch.binaries.reads == first + 1


def test_a_configuration_kata_would_refuse_is_not_called_safe(tmp_path: Path) -> None:
    """Kata 3.8, a VF, and a configuration.toml Kata refuses to load: the exposure line warns that nothing was
    assessed (and points at the kata config line), never "no Kata handler to assess" as a pass."""
    root = host(tmp_path, "go38-noport", "vfs")
    cfg = root / "usr/share/defaults/kata-containers/configuration.toml"
    cfg.write_text(cfg.read_text().replace('cold_plug_vfio = "no-port"', "cold_plug_vfio = no-port"))
    line = kata_exposure(HostPaths.at(root))
    assert (line.status, line.name) == ("warn", "kata exposure"), line
    assert line.detail.startswith("not assessed: no handler has a configuration Kata would load")


def test_an_upgrade_then_a_vf_leaving_are_judged_in_the_next_exposure_round(tmp_path: Path) -> None:
    """The running source: dpkg's status upgraded to 3.9 resolves #10162 and opens #10210 at the next
    exposure round (not before); the VF leaving its network driver then resolves #10210 (no VF to give)."""
    root = host(tmp_path, "go38-noport", "vfs")
    w = KataWatcher(HostPaths.at(root), {"journal": False, "kmsg": False, "exposure_interval_s": 5})
    c = Correlator()

    def round_(ts: int, mono: float) -> list[ev.Finding]:
        return [f for e in w.step(ts, mono) for f in c.feed(e) if f.rule == "kata-vfio-exposure"]

    for e in w.step(1, 0.0, force=True):
        c.feed(e)
    assert [dict(f.labels)["issue"] for f in c.active if f.rule == "kata-vfio-exposure"] == ["10162"]
    status = root / "var/lib/dpkg/status"
    status.write_text(status.read_text().replace("Version: 3.8.0-1", "Version: 3.9.0-1"))
    assert round_(2, 2.0) == []  # the configuration round does not read versions
    out = round_(3, 5.5)
    assert [(f.status, dict(f.labels)["issue"]) for f in out] == [("resolved", "10162"), ("open", "10210")]
    assert out[0].resolved_reason.startswith("Kata is now 3.9.0 (read from dpkg kata-containers 3.9.0-1")
    vf = root / "sys/bus/pci/devices/0000:01:10.2"
    (vf / "driver").unlink()
    shutil.rmtree(vf / "net")
    (f,) = round_(4, 11.0)
    assert f.status == "resolved" and f.resolved_reason.startswith("no VF can be given to pods now")
    assert [a.rows[0].exposed for a in c.snapshot().kata_exposure] == [False]


def test_a_kata_runtime_log_line_gives_the_version_when_nothing_else_does(tmp_path: Path) -> None:
    """No version source on the host, a followed log file: the Go kata-runtime CLI's line (real, version=1.0.0
    with its commit) is a reading (not exact) that wins alone, judged in the next round: the unknown-version
    finding resolves naming it (1.0.0 predates cold_plug_vfio: not assessed). A crate's 0.1.0 (runtime-rs's form,
    #12235) is no version: the finding stays, the refusal is among the readings."""
    root = host(tmp_path, "unknown-noport", "vfs")
    log = tmp_path / "kata.log"
    log.write_text("")
    w = KataWatcher(HostPaths.at(root), {"journal": False, "kmsg": False, "log_files": [str(log)],
                                         "exposure_interval_s": 60})
    c = Correlator()
    for e in w.step(1, 0.0, force=True):
        c.feed(e)
    (opened,) = [f for f in c.active if f.rule == "kata-vfio-exposure"]
    assert dict(opened.labels)["issue"] == "unknown-version"
    with log.open("a") as fh:
        fh.write('time="2025-12-15T19:55:10Z" level=info msg="x" name=kata-runtime version=0.1.0 source=agent\n')
    for e in w.step_logs(2) + w.step(3, 0.2):
        c.feed(e)
    assert [f.finding_id for f in c.active if f.rule == "kata-vfio-exposure"] == [opened.finding_id]
    assert "not Kata's (ignored)" in " ".join(r.detail for r in c.snapshot().kata_facts[0].readings)
    with log.open("a") as fh:
        fh.write((FIXTURES / "kata-version" / "kata-packaging62-runtime-journal.txt").read_text())
    out = [f for e in w.step_logs(4) + w.step(5, 0.4) for f in c.feed(e) if f.rule == "kata-vfio-exposure"]
    (f,) = out
    assert f.status == "resolved" and f.resolved_reason.startswith("Kata is now 1.0.0 (read from a kata-runtime log line")
    (facts,) = c.snapshot().kata_facts
    assert facts.version_source is not None and (facts.version_source.source, facts.version_source.exact) == ("log", False)
