"""`record sysfs --out` never deletes what the recorder did not write (the real command, no privileges)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from diag.commands.record import MARKER
from diag.common.paths import HostPaths
from diag.sources import sysfs
from tests.conftest import FIXTURES, vfiowatch_bin

VIRTIO = FIXTURES / "sysfs" / "host-virtio"
LAB = FIXTURES / "sysfs" / "sriov-lab"


def record(out: str, root: Path = VIRTIO, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([vfiowatch_bin(), "--root", str(root), "record", "sysfs", "--out", out],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def bdfs(root: Path) -> list[str]:
    return [d.bdf for d in sysfs.scan(HostPaths.at(root), names=False)]


def test_out_dot_in_a_home_like_directory_deletes_nothing(tmp_path: Path) -> None:
    """The report's reproduction: `mkdir d && cd d && touch .bashrc && mkdir work && record
    --out .` keeps every file, says why with a hint, and exits non-zero (it emptied the
    directory, then crashed on rmdir('.'))."""
    d = tmp_path / "d"
    (d / "work").mkdir(parents=True)
    (d / ".bashrc").write_text("alias ll='ls -l'\n")
    (d / "work" / "notes").write_text("mine\n")
    res = record(".", cwd=d)
    assert res.returncode != 0
    assert sorted(p.name for p in d.rglob("*")) == [".bashrc", "notes", "work"]
    assert (d / ".bashrc").read_text() == "alias ll='ls -l'\n"
    assert res.stderr.startswith("Cannot record: . is not empty and is not an earlier recording")
    assert "nothing was deleted" in res.stderr and "hint: choose a new or empty directory" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_new_path_is_created_and_marked(tmp_path: Path) -> None:
    """A path that does not exist (parents too) is created; the marker lists what was written."""
    out = tmp_path / "a" / "b" / "rec"
    res = record(str(out))
    assert res.returncode == 0, res.stderr
    assert bdfs(out) == bdfs(VIRTIO)
    doc = json.loads((out / MARKER).read_text())
    assert doc["complete"] is True and doc["tool"] == "vfiowatch record sysfs"
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*")} - {MARKER}
    assert set(doc["entries"]) == on_disk


def test_an_earlier_recording_is_replaced_by_removing_only_its_own_paths(tmp_path: Path) -> None:
    """Recording over a recording (a relative --out): the old tree is gone, the new one scans
    like its root, nothing else was there to keep."""
    pf = tmp_path / "rec" / "sys" / "devices" / "pci0000:00" / "0000:00:02.0" / "0000:01:00.0"
    res = record("rec", root=LAB, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(bdfs(tmp_path / "rec")) == 9 and pf.is_dir()
    res = record("rec", root=VIRTIO, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert bdfs(tmp_path / "rec") == bdfs(VIRTIO) and not pf.exists()


def test_a_recording_holding_a_users_file_is_refused_untouched(tmp_path: Path) -> None:
    """A file the user put inside a recording (or a marker copied into another directory)
    is not the recorder's: the whole directory is refused, the recording and the file stay."""
    out = tmp_path / "rec"
    assert record(str(out)).returncode == 0
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    (out / "sys" / "mine.txt").write_text("keep me\n")
    res = record(str(out), root=LAB)
    assert res.returncode != 0 and "sys/mine.txt" in res.stderr and "nothing was deleted" in res.stderr
    assert (out / "sys" / "mine.txt").read_text() == "keep me\n"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted([*before, "sys/mine.txt"])


def test_out_naming_a_file_is_refused(tmp_path: Path) -> None:
    """--out FILE: refused, the file unchanged."""
    f = tmp_path / "f"
    f.write_text("data\n")
    res = record(str(f))
    assert res.returncode != 0 and "is not a directory" in res.stderr
    assert f.read_text() == "data\n"


def test_an_empty_directory_is_used(tmp_path: Path) -> None:
    """An existing empty directory (`.` in a fresh one) is recorded into."""
    res = record(".", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert bdfs(tmp_path) == bdfs(VIRTIO)
