"""`--root` confines the exposure's readers: shim binary, dpkg status and lists, rpm database, kata-deploy's
VERSION, the collect script, the device plugin's file and a running plugin's /proc/<pid>/root.

The hostile tree of tests/hostile_root.py, plus links for each of these that escape the root (`../`
targets, refused; absolute ones, taken under the root as in a chroot). Any open or read of anything
outside, by any process, is seen (inotify); the canary must never show; the refusals are reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from diag import cli
from diag.common.paths import HostPaths
from diag.sources.kata.source import exposure_now
from tests.hostile_root import CANARY, Hostile, OutsideWatch, _abs, _rel, _w, build

PLUGIN_CHROOT, PLUGIN_ESCAPED = 4250, 4251
ESCAPES = ("/opt/kata/runtime-rs/bin/containerd-shim-kata-v2", "/opt/kata/VERSION", "/opt/kata/bin/kata-collect-data.sh",
           "/var/lib/dpkg/info/kata-containers.list", "/var/lib/rpm/rpmdb.sqlite",
           f"/proc/{PLUGIN_CHROOT}/root", f"/proc/{PLUGIN_ESCAPED}/root")


def _plugin(r: Path, pid: int) -> None:
    _w(r / "proc" / str(pid) / "comm", "sriovdp\n")
    _w(r / "proc" / str(pid) / "cmdline", b"sriovdp\0--config-file=/etc/pcidp/config.json\0")


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[Hostile, OutsideWatch]]:
    h = build(tmp_path)
    out, r = h.outside / "kexp", h.root
    for name in ("10-abs.toml", "20-rel.toml"):  # handler kata-qemu loads: its version is sought
        (r / "opt/kata/share/defaults/kata-containers/runtimes/qemu/config.d" / name).unlink()
    _w(out / "shim", b"\x7fELF" + CANARY.encode() * 32)
    _w(out / "VERSION", f"3.8.0\n{CANARY}\n")
    _w(out / "status", f"Package: kata-containers\nStatus: install ok installed\nArchitecture: amd64\n"
                       f"Version: 3.8.0-{CANARY}\n")
    _w(out / "kata-containers.list", "/opt/kata/bin/containerd-shim-kata-v2\n")
    _w(out / "rpmdb.sqlite", CANARY)
    _w(out / "collect.sh", f'#!/bin/bash\nscript_version="3.8.0 (commit {CANARY})"\n')
    _w(out / "pcidp.json", json.dumps({"resourceList": [{"resourceName": CANARY}]}))
    _w(out / "plugin-root" / "etc" / "pcidp" / "config.json", json.dumps({"resourceList": [{"resourceName": CANARY}]}))
    # kata-deploy's wrapper script, legitimate, naming a shim whose link escapes
    _w(r / "opt/kata/bin/containerd-shim-kata-v2", "#!/bin/sh\nexec /opt/kata/runtime-rs/bin/containerd-shim-kata-v2\n")
    _rel(r / "opt/kata/runtime-rs/bin/containerd-shim-kata-v2", out / "shim")
    _rel(r / "opt/kata/VERSION", out / "VERSION")
    _rel(r / "opt/kata/bin/kata-collect-data.sh", out / "collect.sh")
    _w(r / "var/lib/dpkg/status", "Package: kata-containers\nStatus: install ok installed\nArchitecture: amd64\n"
                                  "Version: 3.8.0-1\n")
    _abs(r / "var/lib/dpkg/info/kata-containers:amd64.list", out / "kata-containers.list")  # absent in the root
    _rel(r / "var/lib/dpkg/info/kata-containers.list", out / "kata-containers.list")
    _rel(r / "var/lib/rpm/rpmdb.sqlite", out / "rpmdb.sqlite")
    _abs(r / "etc/pcidp/config.json", out / "pcidp.json")
    _plugin(r, PLUGIN_CHROOT)
    (r / "proc" / str(PLUGIN_CHROOT) / "root").symlink_to("/")  # a magic link's text; here an absolute link
    _plugin(r, PLUGIN_ESCAPED)
    _rel(r / "proc" / str(PLUGIN_ESCAPED) / "root", out / "plugin-root")
    w = OutsideWatch(h.outside)
    yield h, w
    w.close()


def _clean(text: str, watch: OutsideWatch) -> None:
    assert CANARY not in text
    assert watch.touched() == []


def test_the_exposure_reads_nothing_outside_and_notes_each_refusal(hostile: tuple[Hostile, OutsideWatch]) -> None:
    """One round of the kata source's exposure: no outside byte is read, the version stays unknown, every
    escaping reader's path is a refusal."""
    h, watch = hostile
    paths = HostPaths.at(h.root)
    he = exposure_now(paths)
    assert he is not None
    _clean(repr(he), watch)
    (f,) = he.facts
    assert f.handler == "kata-qemu" and f.version_source is not None and f.version_source.exact is False
    assert f.version_source.detail.startswith("dpkg kata-containers 3.8.0-1 (/var/lib/dpkg/status), which does not own")
    refused = " ".join(paths.refusals.all())
    for where in ESCAPES:
        assert where in refused, where


def test_check_and_snapshot_read_nothing_outside(hostile: tuple[Hostile, OutsideWatch],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The `kata exposure` line and `snapshot --format json`'s Kata part: no outside content or read."""
    h, watch = hostile
    cli.main(["--root", str(h.root), "check"])
    text = capsys.readouterr()
    assert cli.main(["--root", str(h.root), "snapshot", "--format", "json"]) == 0
    js = capsys.readouterr()
    _clean(text.out + text.err + js.out + js.err, watch)
    line = next(x for x in text.out.splitlines() if "kata exposure" in x)
    assert "kata-qemu: not exposed" in line and "Kata 3.8.0" in line
    doc = json.loads(js.out)
    assert {k["handler"] for k in doc["kata"]} >= {"kata-qemu"}
    assert any("/var/lib/rpm/rpmdb.sqlite" in r for r in doc["refused"])
