"""Postmortem and the exposure: a pasted Kata version, with the configuration (and log lines) given beside
it, says whether the node was exposed and which known issue matches what happened."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diag import events as ev
from diag.cli import main
from diag.importers import FileStats, sniff
from diag.importers import kataversion as kv
from tests.conftest import FIXTURES

VERSIONS = FIXTURES / "kata-version"
KATA = FIXTURES / "postmortem-kata"
NO_PORT = str(KATA / "config-no-port" / "configuration-qemu.toml")
ROOT_PORT_DIR = KATA / "config-root-port"
CONTAINERD_LOG = str(KATA / "containerd.log")
RUNTIME_VERSION = str(VERSIONS / "kata-10092-runtime-version.txt")


def report(capsys: pytest.CaptureFixture[str], *inputs: str) -> dict[str, object]:
    main(["postmortem", "--format", "json", *inputs])
    return dict(json.loads(capsys.readouterr().out))


def exposure(doc: dict[str, object]) -> list[dict[str, object]]:
    return [f for f in doc["findings"] if f["rule"] == "kata-vfio-exposure"]  # type: ignore[attr-defined,index]


@pytest.mark.parametrize(("name", "version", "source"), [
    ("kata-10092-runtime-version.txt", "3.6.0", "kata-runtime --version"),
    ("kata-pr308-shim-version.txt", "1.11.0-rc0", "shim --version"),
    ("kata-pr314-kata-env-1.11.toml", "1.11.0-rc0", "kata-env"),
    ("kata-runtime577-kata-env-1.1.toml", "1.1.0", "kata-env"),
    ("kata-runtime776-dpkg-l.txt", "1.3.0~rc1", "dpkg"),
])
def test_pasted_versions_are_recognised_by_content(name: str, version: str, source: str) -> None:
    """Each real pasted text is sniffed as `kataversion` and gives one static facts event naming its source."""
    path = str(VERSIONS / name)
    imp, err = sniff(path)
    assert err == "" and imp is not None and imp.name == "kataversion"
    st = FileStats(path)
    with open(path, "rb") as fh:
        (e,) = list(imp.parse(fh, st, path).events)
    assert isinstance(e, ev.KataFactsObserved) and e.ts_ns == 0
    assert (e.facts.version, e.facts.version_source.source if e.facts.version_source else None) == (version, source)


def test_a_collect_data_report_gives_its_facts_as_an_input_of_their_own(capsys: pytest.CaptureFixture[str]) -> None:
    """kata-collect-data.sh embeds kata-env: the report stays the collect importer's (its journal lines), and
    its Kata facts become `<report>#kata-env`: #10092's report (3.6.0, ColdPlugVFIO no-port) is exposed to #10162."""
    report_path = str(VERSIONS / "kata-10092-collect-data-head.md")
    imp, _ = sniff(report_path)
    assert imp is not None and imp.name == "kata-collect-data"
    doc = report(capsys, report_path)
    formats = {i["path"]: i["format"] for i in doc["inputs"]}  # type: ignore[attr-defined]
    assert formats == {report_path: "kata-collect-data", report_path + "#kata-env": "kataversion"}
    (f,) = exposure(doc)
    labels = dict(f["labels"])  # type: ignore[call-overload]
    assert (labels["issue"], labels["version"], labels["version_source"]) == ("10162", "3.6.0", "collect-data")
    assert "kata-env ColdPlugVFIO" in str(f["explanation"])


def test_runtime_rs_log_versions_are_not_kata_versions() -> None:
    """runtime-rs journal lines carry version=0.1.0 (a crate's): not recognised as a Kata version."""
    head = (VERSIONS / "kata-12235-runtime-rs-journal.txt").read_text().splitlines()
    assert not kv._KataVersionImporter().sniff(head)


def test_version_config_and_lines_say_it_was_exposed_and_what_happened(capsys: pytest.CaptureFixture[str]) -> None:
    """Kata 3.6.0 (#10092's `kata-runtime --version`), the no-port configuration and containerd's lines: the
    node was exposed to #10162, and QEMU's Bus-not-found line shows it happened (in sandbox 7f3c9a1e5b2d)."""
    doc = report(capsys, RUNTIME_VERSION, NO_PORT, CONTAINERD_LOG)
    (f,) = exposure(doc)
    assert f["severity"] == "error" and f["status"] in ("open", "updated")
    assert str(f["summary"]).startswith("handler kata-qemu exposed to Kata #10162: Kata 3.6.0")
    assert "(it happened: qemu-bus-not-found at file:" in str(f["summary"])
    labels = dict(f["labels"])  # type: ignore[call-overload]
    assert labels["version_source"] == "kata-runtime --version" and labels["happened"] == "qemu-bus-not-found"
    assert f["sandbox_id"] == "7f3c9a1e5b2d48f6a0c4e8b1d3f5a7c9e2b4d6f8a1c3e5b7d9f1a3c5e7b9d1f3"


def test_with_the_root_port_configuration_it_was_not_exposed(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    """The same version with root-port (pcie_root_port = 2 by drop-in): no exposure finding."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT_PORT_DIR, conf)
    files = sorted(str(p) for p in conf.rglob("*.toml"))
    doc = report(capsys, RUNTIME_VERSION, *files)
    assert exposure(doc) == []


def test_a_version_alone_is_judged_with_katas_default_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """No configuration among the inputs: Kata's default no-port, and the input's notes say both assumptions."""
    doc = report(capsys, RUNTIME_VERSION)
    (f,) = exposure(doc)
    assert "#10162" in str(f["summary"])
    notes = " ".join(n for i in doc["inputs"] for n in i["notes"])  # type: ignore[attr-defined]
    assert "Kata's default cold_plug_vfio = no-port assumed" in notes and "no inventory among the inputs" in notes


def test_an_inventory_without_vfs_means_not_exposed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A snapshot of a host with no VF beside the version: latent, no finding."""
    from diag.commands.snapshot import snapshot_json
    from diag.common.paths import HostPaths

    snap = tmp_path / "snapshot.json"
    snap.write_text(json.dumps(snapshot_json(HostPaths.at(FIXTURES / "sysfs" / "host-virtio"))))
    assert exposure(report(capsys, RUNTIME_VERSION, NO_PORT, str(snap))) == []
    snap.write_text(json.dumps(snapshot_json(HostPaths.at(FIXTURES / "sysfs" / "sriov-lab"))))
    (f,) = exposure(report(capsys, RUNTIME_VERSION, NO_PORT, str(snap)))
    assert "#10162" in str(f["summary"])


def test_a_snapshot_carries_its_kata_facts_into_postmortem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`snapshot --format json` of a Kata 3.8 host with a VF, read back: the same exposure (dpkg as the source)."""
    from diag.commands.snapshot import snapshot_json
    from diag.common.paths import HostPaths
    from tests.unit.sources.test_kata_exposure_matrix import host

    snap = tmp_path / "snapshot.json"
    snap.write_text(json.dumps(snapshot_json(HostPaths.at(host(tmp_path, "go38-noport", "vfs")))))
    (f,) = exposure(report(capsys, str(snap)))
    labels = dict(f["labels"])  # type: ignore[call-overload]
    assert "#10162" in str(f["summary"]) and labels["version_source"] == "dpkg"
