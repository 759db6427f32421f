"""Kata's version per handler: real pasted texts decoded, and host trees with real binaries and package databases."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources.kata import version as kv
from diag.sources.kata.effective import RuntimeHandler
from tests.conftest import REPO
from tests.katabins import build_kata_go, build_rust, go_missing
from tests.katapkgs import CONFIG, SHIM, dpkg_install

FIX = REPO / "tests" / "fixtures" / "kata-version"
COMMIT = "b7051890af22f80a9f9d8bb9b48b2e3e2a9fee52"

# ---- real texts -----------------------------------------------------------------------------


def test_kata_runtime_version_of_issue_10092() -> None:
    """`kata-runtime --version` as pasted in #10092 gives 3.6.0 and its commit (the tarball said 3.7.0)."""
    tv = kv.parse_runtime_version((FIX / "kata-10092-runtime-version.txt").read_text())
    assert tv == kv.TextVersion("3.6.0", COMMIT, "kata-runtime --version", "go")


def test_collect_report_version_line_and_kata_env_format_are_not_confused() -> None:
    """#10092's report: the script's 3.6.0 is read; kata-env's [Meta] Version 1.0.27 is not Kata's version."""
    text = (FIX / "kata-10092-collect-data-head.md").read_text()
    assert kv.parse_collect_version(text) == kv.TextVersion("3.6.0", COMMIT, "kata-collect-data.sh report")
    assert kv.parse_kata_env(text) is None  # Markdown around it, and no [Runtime] in the cut


def test_kata_env_nested_version_table_and_hypervisor_settings() -> None:
    """kata-env 1.11 (PR #314): version and commit from [Runtime.Version.Version], config path, format."""
    env = kv.parse_kata_env((FIX / "kata-pr314-kata-env-1.11.toml").read_text())
    assert env is not None
    assert (env["version"], env["commit"], env["config_path"], env["runtime_path"], env["format"]) == (
        "1.11.0-rc0", "13f35f3a6fc05972aa60acdfff4838a20634897c-dirty", "/etc/kata-containers/configuration.toml",
        "/usr/local/bin/kata-runtime", "1.0.24")


def test_kata_env_older_flat_version_table() -> None:
    """kata-env 1.1 (runtime#577) kept Semver directly in [Runtime.Version]."""
    env = kv.parse_kata_env((FIX / "kata-runtime577-kata-env-1.1.toml").read_text())
    assert env is not None and (env["version"], env["commit"]) == ("1.1.0", "e35caa60ade78efa61160c324309e2bc6b71932c")


def test_kata_env_json_form_with_vfio_settings() -> None:
    """`kata-env --json` uses the same Go field names: ColdPlugVFIO and PCIeRootPort are read."""
    text = json.dumps({"Meta": {"Version": "1.0.27"}, "Runtime": {"Path": "/opt/kata/bin/kata-runtime", "Version": {
        "OCI": "1.1.0+dev", "Version": {"Semver": "3.8.0", "Commit": COMMIT, "Major": 3}},
        "Config": {"Path": "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml"}},
        "Hypervisor": {"MachineType": "q35", "HotPlugVFIO": "no-port", "ColdPlugVFIO": "no-port", "PCIeRootPort": 0}})
    env = kv.parse_kata_env(text)
    assert env is not None and (env["version"], env["cold_plug_vfio"], env["pcie_root_port"]) == ("3.8.0", "no-port", 0)


def test_shim_version_before_golang_tag() -> None:
    """The shim's --version of PR #308 (no "(Golang)" yet): version and dirty commit."""
    tv = kv.parse_shim_version((FIX / "kata-pr308-shim-version.txt").read_text())
    assert tv is not None and (tv.version, tv.commit, tv.runtime) == (
        "1.11.0-rc0", "76577fae178de373103dca378a8e451027291146-dirty", "")


def test_collect_report_of_a_failed_kata_env() -> None:
    """#9127: the report's version is read although its kata-env failed on a runtime-rs file."""
    tv = kv.parse_collect_version((FIX / "kata-9127-collect-data-rs.md").read_text())
    assert tv is not None and (tv.version, tv.commit) == ("3.2.0-rc0", "9336e2e492e207541b44cd929997825cb5612fff")


def test_dpkg_listing_keeps_the_runtime_package_only() -> None:
    """The report's `dpkg -l` of PR #776: kata-runtime 1.3.0~rc1 (image, kernel, proxy, shim are not the runtime)."""
    assert kv.parse_package_listing((FIX / "kata-runtime776-dpkg-l.txt").read_text()) == [
        ("dpkg", "kata-runtime", "1.3.0~rc1+git.22aedc4-49")]


def test_rpm_listing() -> None:
    """`rpm -qa` names: kata-containers 3.8.0-1.fc41 is the runtime package, qemu is not."""
    text = "qemu-kvm-core-4.2.0-34.module_el8.3.0+555+a55c8938.x86_64\nkata-containers-3.8.0-1.fc41.x86_64\n"
    assert kv.parse_package_listing(text) == [("rpm", "kata-containers", "3.8.0-1.fc41")]


def test_runtime_rs_and_agent_log_version_is_refused() -> None:
    """#12235's journal lines carry version 0.1.0 (a crate's CARGO_PKG_VERSION): refused, and said why."""
    for line in (FIX / "kata-12235-runtime-rs-journal.txt").read_text().splitlines():
        fields = json.loads(line.split(": ", 1)[1])
        r = kv.version_from_log_fields(fields)
        assert r is not None and r.version == "" and "not Kata's (ignored)" in r.detail
    rs = kv.version_from_log_fields({"name": "kata-runtime", "version": "0.1.0", "source": "a" * 64})
    assert rs is not None and rs.version == ""


def test_go_kata_runtime_cli_log_version_is_a_reading() -> None:
    """The Go kata-runtime CLI logs version= with commit=: a (non-exact) reading."""
    r = kv.version_from_log_fields({"name": "kata-runtime", "version": "3.8.0", "commit": COMMIT, "source": "runtime"})
    assert r is not None and (r.version, r.exact) == ("3.8.0", False)


def test_deploy_version_file() -> None:
    """kata-deploy's VERSION holds `git describe`: a release or a later build."""
    assert kv.parse_deploy_version("3.8.0\n") == kv.TextVersion("3.8.0", what="kata-deploy VERSION")
    assert kv.parse_deploy_version("3.8.0-12-gabcdef0\n") is not None
    assert kv.parse_deploy_version("fatal: not a git repository\n") is None


# ---- host trees -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gobuild(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = go_missing()
    assert not why, why
    return tmp_path_factory.mktemp("gobuild")


@pytest.fixture(scope="module")
def shim_389(gobuild: Path) -> dict[str, Path]:
    cache = REPO / ".cache" / "go-test"
    cache.mkdir(parents=True, exist_ok=True)
    return {v: build_kata_go(gobuild, version=v, commit=COMMIT, form="static-stripped", cache=cache)
            for v in ("3.8.0", "3.9.0")}


def place(tree: Path, rel: str, src: Path | bytes) -> None:
    p = tree / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, Path):
        shutil.copyfile(src, p)
    else:
        p.write_bytes(src)
    p.chmod(0o755)


def test_kata_deploy_tree_version_file_wins_and_the_binary_agrees(tmp_path: Path, shim_389: dict[str, Path]) -> None:
    """kata-deploy layout: the exact /opt/kata/VERSION wins over the stripped shim's heuristic reading, which agrees."""
    place(tmp_path, "opt/kata/bin/containerd-shim-kata-v2", shim_389["3.8.0"])
    place(tmp_path, "opt/kata/VERSION", b"3.8.0\n")
    h = RuntimeHandler(name="kata-qemu", runtime_type="io.containerd.kata-qemu.v2",
                       runtime_path="/opt/kata/bin/containerd-shim-kata-v2")
    hv = kv.handler_version(HostPaths.at(tmp_path), h)
    assert str(hv.version) == "3.8.0" and hv.runtime == "go"
    assert hv.winner is not None and hv.winner.source == "kata-deploy" and hv.winner.exact
    assert [(r.source, r.version, r.exact) for r in hv.readings] == [("binary", "3.8.0", False),
                                                                      ("kata-deploy", "3.8.0", True)]
    assert hv.disagreements == ()


def test_dpkg_owner_wins_over_a_stripped_binary_heuristic_and_disagreement_is_said(
        tmp_path: Path, shim_389: dict[str, Path]) -> None:
    """Heuristic binary reading (3.9.0) vs the exact dpkg owner (3.8.0): dpkg wins, the conflict is named."""
    dpkg_install(tmp_path / "tree", tmp_path, files={SHIM: shim_389["3.9.0"].read_bytes(), CONFIG: b""})
    hv = kv.handler_version(HostPaths.at(tmp_path / "tree"), RuntimeHandler(name="kata",
                                                                            runtime_type="io.containerd.kata.v2"))
    assert hv.winner is not None and hv.winner.source == "dpkg" and str(hv.version) == "3.8.0"
    assert hv.winner.detail == ("dpkg kata-containers 3.8.0-1 (/var/lib/dpkg/status) owns "
                                "/usr/bin/containerd-shim-kata-v2")
    assert len(hv.disagreements) == 1 and hv.disagreements[0].endswith("says 3.9.0")


def test_kata_deploy_wrapper_script_is_followed(tmp_path: Path, shim_389: dict[str, Path]) -> None:
    """containerd-shim-kata-qemu-v2 on PATH is kata-deploy's script exec'ing /opt/kata/bin's shim."""
    place(tmp_path, "opt/kata/bin/containerd-shim-kata-v2", shim_389["3.9.0"])
    place(tmp_path, "usr/local/bin/containerd-shim-kata-qemu-v2",
          b"#!/usr/bin/env bash\nKATA_CONF_FILE=/opt/kata/share/defaults/kata-containers/configuration-qemu.toml "
          b"/opt/kata/bin/containerd-shim-kata-v2 \"$@\"\n")
    hv = kv.handler_version(HostPaths.at(tmp_path), RuntimeHandler(name="kata-qemu",
                                                                   runtime_type="io.containerd.kata-qemu.v2"))
    assert hv.shim.chain == ("/usr/local/bin/containerd-shim-kata-qemu-v2", "/opt/kata/bin/containerd-shim-kata-v2")
    assert str(hv.version) == "3.9.0"


def test_runtime_rs_tree_version_from_kata_deploy_file(tmp_path: Path, gobuild: Path) -> None:
    """runtime-rs (a Rust binary, no Go build info) under /opt/kata/runtime-rs: /opt/kata/VERSION wins."""
    place(tmp_path, "opt/kata/runtime-rs/bin/containerd-shim-kata-v2", build_rust(gobuild))
    place(tmp_path, "opt/kata/VERSION", b"4.1.0\n")
    h = RuntimeHandler(name="kata-qemu-runtime-rs", runtime_type="io.containerd.kata-qemu-runtime-rs.v2",
                       runtime_path="/opt/kata/runtime-rs/bin/containerd-shim-kata-v2", runtime="rs")
    hv = kv.handler_version(HostPaths.at(tmp_path), h)
    assert hv.runtime == "rs" and str(hv.version) == "4.1.0"
    assert hv.readings[0].detail == ("/opt/kata/runtime-rs/bin/containerd-shim-kata-v2: no Go build information "
                                     "(runtime-rs is Rust)")
    assert hv.winner is not None and hv.winner.detail == "/opt/kata/VERSION (kata-deploy, git describe 4.1.0)"


def test_collect_script_beside_the_shim(tmp_path: Path) -> None:
    """A shim that cannot be read (a placeholder) and the collect script beside it: the script's version."""
    place(tmp_path, "usr/local/bin/containerd-shim-kata-v2", b"#!/bin/sh\necho placeholder\n")
    place(tmp_path, "usr/local/bin/kata-collect-data.sh",
          b'#!/bin/bash\ntypeset -r script_name=${0##*/}\ntypeset -r script_version="3.3.0 (commit '
          + COMMIT.encode() + b')"\n')
    hv = kv.handler_version(HostPaths.at(tmp_path), RuntimeHandler(name="kata", runtime_type="io.containerd.kata.v2"))
    assert str(hv.version) == "3.3.0" and hv.winner is not None and hv.winner.source == "collect-script"
    assert hv.readings[0].detail == "/usr/local/bin/containerd-shim-kata-v2: not an ELF file"


def test_nothing_to_read_says_what_was_tried(tmp_path: Path) -> None:
    """No shim and no database: no version, and the reading says the shim was not found on PATH."""
    hv = kv.handler_version(HostPaths.at(tmp_path), RuntimeHandler(name="kata", runtime_type="io.containerd.kata.v2"))
    assert hv.version is None and hv.winner is None
    assert [r.detail for r in hv.readings] == ["containerd-shim-kata-v2 not found on PATH"]


def test_the_real_shim_prints_what_the_decoder_reads(shim_389: dict[str, Path]) -> None:
    """The "(Golang)" --version form, printed by a binary built with Kata's format string, decodes."""
    out = subprocess.run([str(shim_389["3.9.0"]), "--version"], capture_output=True, text=True, check=True).stdout
    assert kv.parse_shim_version(out) == kv.TextVersion("3.9.0", COMMIT, "containerd-shim-kata-v2 --version", "go")


# ---- postmortem: a report says whether the node was exposed and which issue matches ---------


def test_report_of_issue_10092_was_exposed_to_10162() -> None:
    """#10092's collect-data report: Kata 3.6.0 with ColdPlugVFIO no-port: exposed to #10162."""
    from diag.core import kata_exposure as kx
    f = kv.facts_from_report((FIX / "kata-10092-collect-data-head.md").read_text(), origin="kata.log")
    assert f is not None and str(f.version) == "3.6.0" and f.cold_plug_vfio == "no-port"
    assert f.version_source is not None and f.version_source.detail == "kata.log: kata-collect-data.sh report 3.6.0"
    a = kx.assess(ev.replace(f, vfs=(kx.VfCandidate(bdf="0000:84:01.1"),)))
    assert [r.issue for r in a.rows] == ["10162"]
    line = ("qemu-system-x86_64: -device vfio-pci,host=0000:84:01.1,x-pci-vendor-id=0x15b3,x-pci-device-id=0x101e,"
            "bus=<unknown PCIePortBusPrefix: >0: Bus '<unknown PCIePortBusPrefix: >0' not found")
    (hit,) = kx.what_happened(a, [("qemu-bus-not-found", line), ("cannot-start-vm", "Cannot start VM")])
    assert hit[0].issue == "10162" and hit[1] == "qemu-bus-not-found"


def test_kata_env_alone_gives_version_and_cold_plug() -> None:
    """kata-env of 1.11 (PR #314): version from [Runtime.Version.Version]; no ColdPlugVFIO there (pre-3.2)."""
    f = kv.facts_from_report((FIX / "kata-pr314-kata-env-1.11.toml").read_text())
    assert f is not None and str(f.version) == "1.11.0-rc0" and f.cold_plug_origin == "default (not in the report)"
    assert kv.facts_from_report("nothing about Kata here\n") is None


def test_lines_show_the_issue_they_belong_to() -> None:
    """QEMU's no-port bus is #10162, its rp0 bus #5676, port-not-set #9014, the refusal #10210."""
    from diag.core.kata_exposure import issue_of_line
    assert issue_of_line("qemu-bus-not-found", "Bus '<unknown PCIePortBusPrefix: >0' not found") == "10162"
    assert issue_of_line("qemu-bus-not-found", "-device vfio-pci,host=3b:04.1,bus=rp0: Bus 'rp0' not found") == "5676"
    assert issue_of_line("port-not-set", "port is not set for device 0000:5e:02.1") == "9014"
    assert issue_of_line("coldplug-disabled-refusal", "because cold_plug_vfio is disabled") == "10210"
    assert issue_of_line("cannot-start-vm", "Cannot start VM") is None
