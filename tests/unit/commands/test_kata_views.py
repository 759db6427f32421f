"""`vfiowatch snapshot` shows each Kata handler's version (and where it was read), cold_plug_vfio and its
exposure with the fix, in the table and in the JSON's `kata` list; snapshot and check escape a hostile
handler name exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag import cli
from tests.conftest import FIXTURES
from tests.unit.sources.test_kata_exposure_matrix import host


def snapshot(root: Path, capsys: pytest.CaptureFixture[str], *fmt: str) -> str:
    assert cli.main(["--root", str(root), "snapshot", *fmt]) == 0
    return capsys.readouterr().out


def test_an_exposed_handler_in_the_table_with_its_source_and_drop_in(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Kata 3.8 from dpkg, no-port, a VF: the handler line names dpkg, the ✗ line #10162, then the drop-in."""
    out = snapshot(host(tmp_path, "go38-noport", "vfs"), capsys).splitlines()
    i = next(n for n, x in enumerate(out) if x.startswith("Kata handler kata (Go): "))
    assert "read from dpkg kata-containers 3.8.0-1 (/var/lib/dpkg/status)" in out[i]
    assert "cold_plug_vfio = 'no-port'" in out[i]
    assert out[i + 1].startswith("  ✗ exposed to Kata #10162 (error): Kata 3.8.0 moves the VF")
    assert out[i + 2].startswith("    fix: ")
    assert out[i + 3:i + 7] == ["      # /usr/share/defaults/kata-containers/config.d/90-vfiowatch-vfio-cold-plug.toml",
                                "      [hypervisor.qemu]", '      cold_plug_vfio = "root-port"',
                                "      pcie_root_port = 1   # one per VF a pod is given (at most 16)"]


def test_latent_fixed_and_no_kata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No VF: `·` would-be line; with the drop-in: `✓ not exposed`; no Kata installed: no Kata line at all."""
    assert "  · would be exposed (no VF pods can be given now) to Kata #10162 (error)" in \
        snapshot(host(tmp_path, "go38-noport", "none"), capsys)
    assert "  ✓ not exposed to a known Kata VFIO bug" in snapshot(host(tmp_path, "go38-dropin", "vfs"), capsys)
    assert "Kata handler" not in snapshot(FIXTURES / "sysfs" / "sriov-lab", capsys)


def test_the_json_kata_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`kata`: per handler its facts (version source, origin, VFs) and each exposure row; [] without Kata."""
    doc = json.loads(snapshot(host(tmp_path, "go38-noport", "vfs"), capsys, "--format", "json"))
    (k,) = doc["kata"]
    assert k["handler"] == "kata" and k["facts"]["version"] == "3.8.0"
    assert k["facts"]["version_source"]["source"] == "dpkg" and k["facts"]["version_source"]["exact"] is True
    assert [v["bdf"] for v in k["facts"]["vfs"]] == ["0000:01:10.2"]
    (row,) = k["exposure"]
    assert (row["issue"], row["severity"], row["exposed"]) == ("10162", "error", True)
    assert row["url"].endswith("/issues/10162") and 'cold_plug_vfio = "root-port"' in row["dropin"]
    assert json.loads(snapshot(FIXTURES / "sysfs" / "sriov-lab", capsys, "--format", "json"))["kata"] == []


HOSTILE = "kata\x1b[2J\x1b]0;pwn\x07"
SHOWN = r"kata\x1b[2J\x1b]0;pwn\x07"
"""How `safe` shows the name: each control once as \\xNN (a second pass would double the backslash)."""


def test_a_hostile_handler_name_is_escaped_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A runtime named with terminal escapes in containerd's config: no raw control reaches the terminal, and
    snapshot's and check's Kata lines show it escaped exactly once; check's JSON keeps the name itself."""
    root = host(tmp_path, "go38-noport", "vfs")
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace("runtimes.kata]", r'runtimes."kata\u001b[2J\u001b]0;pwn\u0007"]'))
    out = snapshot(root, capsys)
    assert "\x1b" not in out and "\x07" not in out
    assert next(x for x in out.splitlines() if x.startswith("Kata handler")).startswith(f"Kata handler {SHOWN} (Go)")
    cli.main(["--root", str(root), "check"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\\\" not in out
    config, exposure = (x for x in out.splitlines() if "kata config" in x or "kata exposure" in x)
    assert f"(handler {SHOWN})" in config and f"handler {SHOWN} exposed to Kata #10162" in exposure
    cli.main(["--root", str(root), "check", "--format", "json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["kata exposure"]["detail"].startswith(f"handler {HOSTILE} exposed to Kata #10162")
