"""The SR-IOV device plugin's configuration (as its project ships it) applied to the lab's real sysfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.core import sriovdp
from diag.sources import sriovdp as reader
from diag.sources.sysfs import scan
from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "sriovdp"
LAB = REPO / "tests" / "fixtures" / "sysfs" / "sriov-lab"


@pytest.fixture(scope="module")
def lab() -> list[ev.PciDevice]:
    # PF 0000:01:00.0 (igb, eth0) with VF0 0000:01:10.0 on vfio-pci and VF1 0000:01:10.2 on igbvf (eth2)
    return scan(HostPaths.at(LAB), names=False)


def cfg(text: str) -> sriovdp.DpConfig:
    return sriovdp.parse_config(text, "/etc/pcidp/config.json")


def picked(devs: list[ev.PciDevice], text: str) -> list[tuple[str, str, bool]]:
    return [(s.device.bdf, s.resource.full_name, s.as_netdev) for s in sriovdp.select(devs, [cfg(text)])]


def test_shipped_example_parses_and_selects_nothing_in_the_lab(lab: list[ev.PciDevice]) -> None:
    """deployments/configMap.yaml: four pools, none for the lab's 8086:10ca VFs."""
    c = sriovdp.parse_config((FIX / "deployments-configMap.config.json").read_text(), "config.json")
    assert [r.name for r in c.resources] == ["intel_sriov_netdevice", "intel_sriov_dpdk", "mlnx_sriov_rdma",
                                             "brcm_sriov_bnxt"]
    assert c.resources[1].selectors[0].pf_names == ("enp0s0f0", "enp2s2f1")
    assert c.resources[2].selectors[0].unsupported == ("isRdma",)
    assert sriovdp.select(lab, [c]) == []


def test_operator_form_with_go_field_names_parses(lab: list[ev.PciDevice]) -> None:
    """The operator's per-node JSON (IsRdma, NeedVhostNet, SelectorObj) parses case-insensitively."""
    c = sriovdp.parse_config((FIX / "operator-node-config.json").read_text(), "config.json")
    assert c.error == "" and c.resources[0].selectors[0].pf_names == ("ens785f0#0-4", "ens785f1#0-9")


def test_the_published_readme_example_is_refused_with_line_and_column() -> None:
    """The README's example has a trailing comma: the error names the file, line 87 and column 9."""
    c = sriovdp.parse_config((FIX / "readme-config-parameters.json").read_text(), "readme.json")
    assert c.error == "readme.json:87:9: Expecting property name enclosed in double quotes"
    assert c.resources == ()


@pytest.mark.parametrize(("text", "want"), [
    ('{"resourceList":[{"resourceName":"lab_vf","selectors":{"vendors":["8086"],"devices":["10ca"],'
     '"drivers":["igbvf"]}}]}', [("0000:01:10.2", "intel.com/lab_vf", True)]),
    ('{"resourceList":[{"resourceName":"lab_dpdk","resourcePrefix":"lab.io","selectors":[{"drivers":["vfio-pci"]}]}]}',
     [("0000:01:10.0", "lab.io/lab_dpdk", False)]),
    ('{"resourceList":[{"resourceName":"by_pf","selectors":[{"pfNames":["ETH0#1"]}]}]}',
     [("0000:01:10.2", "intel.com/by_pf", True)]),
    ('{"resourceList":[{"resourceName":"by_root","selectors":[{"rootDevices":["0000:01:00.0#0-1"]}]}]}',
     [("0000:01:10.0", "intel.com/by_root", False), ("0000:01:10.2", "intel.com/by_root", True)]),
    ('{"resourceList":[{"resourceName":"vf0","selectors":[{"rootDevices":["0000:01:00.0#0"]}]}]}',
     [("0000:01:10.0", "intel.com/vf0", False)]),
    ('{"resourceList":[{"resourceName":"acc","deviceType":"accelerator","selectors":[{"vendors":["8086"]}]}]}',
     [("0000:01:10.0", "intel.com/acc", False), ("0000:01:10.2", "intel.com/acc", False)]),
])
def test_selectors_pick_the_lab_vfs_as_the_plugin_would(lab: list[ev.PciDevice], text: str,
                                                       want: list[tuple[str, str, bool]]) -> None:
    """vendors/devices/drivers, pfNames (case-insensitive, VF ranges), rootDevices; the PF with VFs is never a candidate."""
    assert picked(lab, text) == want


def test_vf_candidates_with_and_without_a_plugin_configuration(lab: list[ev.PciDevice]) -> None:
    """Without configuration every VF on a host network driver counts; with one, only its netDevice pools' VFs."""
    vfs, basis = sriovdp.vf_candidates(lab, [])
    assert [s.device.bdf for s in vfs] == ["0000:01:10.2"]
    assert basis == "every VF on a host network driver (no SR-IOV device plugin configuration)"
    none = cfg('{"resourceList":[{"resourceName":"other","selectors":{"devices":["154c"]}}]}')
    vfs, basis = sriovdp.vf_candidates(lab, [none])
    assert vfs == () and basis == ("the SR-IOV device plugin's pools (/etc/pcidp/config.json) select no VF on a host "
                                   "network driver")


def test_reader_finds_the_running_plugins_file_through_proc_root(tmp_path: Path) -> None:
    """A DaemonSet plugin's ConfigMap is read as /proc/<pid>/root/<--config-file>; a host file too."""
    (tmp_path / "proc/4242/root/etc/pcidp").mkdir(parents=True)
    (tmp_path / "proc/4242/comm").write_text("sriovdp\n")
    (tmp_path / "proc/4242/cmdline").write_bytes(b"/usr/bin/sriovdp\0--log-level=10\0--config-file=/etc/pcidp/config.json\0")
    (tmp_path / "proc/4242/root/etc/pcidp/config.json").write_text((FIX / "operator-node-config.json").read_text())
    (tmp_path / "etc/pcidp").mkdir(parents=True)
    (tmp_path / "etc/pcidp/config.json").write_text("{bad")
    got = reader.read_configs(HostPaths.at(tmp_path))
    assert [(c.path, c.error) for c in got] == [
        ("/etc/pcidp/config.json", "/etc/pcidp/config.json:1:2: Expecting property name enclosed in double quotes"),
        ("/proc/4242/root/etc/pcidp/config.json (sriovdp pid 4242)", "")]
    assert got[1].resources[0].name == "sriovnics"
