"""WatchSet on real inotify: wanted directories watched under --root, or through their nearest parent."""

from __future__ import annotations

import os
import time
from pathlib import Path

from diag.common.paths import HostPaths
from diag.sources.inotify import Inotify, InotifyEvent, Want, WatchSet


def _events(ino: Inotify, timeout: float = 2.0) -> list[InotifyEvent]:
    """Whatever the kernel queued (inotify events are queued synchronously by the writer's
    system call, so a short wait only covers scheduling)."""
    end = time.monotonic() + timeout
    out: list[InotifyEvent] = []
    while time.monotonic() < end:
        got = ino.read()
        out += got
        if got:
            time.sleep(0.01)
            out += ino.read()
            return out
        time.sleep(0.005)
    return out


def test_a_missing_directory_is_watched_through_its_parent_until_it_appears(tmp_path: Path) -> None:
    """/run/vc/sbs missing: its nearest parent is watched; mkdir -p makes the set stale and the
    next sync watches the directory itself; a file closed there is reported under its tag."""
    ino = Inotify()
    ws = WatchSet(ino, HostPaths.at(tmp_path))
    want = Want("/run/vc/sbs", None, "state")
    assert ws.sync([want])
    assert ws.watched() == {"/": ("state",)}
    (tmp_path / "run/vc/sbs").mkdir(parents=True)
    tagged = ws.tags(_events(ino))
    assert [e.name for e in tagged["state"]] == ["run"]
    assert ws.sync([want])  # placed again: now deeper
    assert ws.watched() == {"/run/vc/sbs": ("state",)}
    (tmp_path / "run/vc/sbs/abc").mkdir()
    assert [(e.name, e.is_dir) for e in ws.tags(_events(ino))["state"]] == [("abc", True)]
    assert not ws.sync([want])  # nothing moved
    ino.close()


def test_a_new_regular_file_counts_when_closed_not_when_created(tmp_path: Path) -> None:
    """persist.json opened and half written: nothing yet (IN_CREATE of a regular file is
    skipped); its close is reported. A symlink counts at once (it is made whole)."""
    ino = Inotify()
    ws = WatchSet(ino, HostPaths.at(tmp_path))
    ws.sync([Want("/d", frozenset({"persist.json", "link"}), "state")])
    (tmp_path / "d").mkdir()
    ws.tags(_events(ino))
    ws.sync([Want("/d", frozenset({"persist.json", "link"}), "state")])
    fh = open(tmp_path / "d/persist.json", "w")  # noqa: SIM115 - kept open on purpose
    fh.write('{"half": ')
    fh.flush()
    assert ws.tags(_events(ino, 0.3)) == {}
    fh.write("1}")
    fh.close()
    assert [e.flags for e in ws.tags(_events(ino))["state"]] == [("CLOSE_WRITE",)]
    os.symlink("persist.json", tmp_path / "d/link")
    assert [e.flags for e in ws.tags(_events(ino))["state"]] == [("CREATE",)]
    (tmp_path / "d/other").write_text("x")
    assert ws.tags(_events(ino, 0.3)) == {}  # not a name that matters there
    ino.close()


def test_a_removed_directory_falls_back_to_its_parent_and_comes_back(tmp_path: Path) -> None:
    """rmdir of a watched directory: its tag is reported, the watch falls back to the parent;
    mkdir again: watched as itself again."""
    (tmp_path / "etc/kata-containers").mkdir(parents=True)
    ino = Inotify()
    ws = WatchSet(ino, HostPaths.at(tmp_path))
    want = Want("/etc/kata-containers", None, "config")
    ws.sync([want])
    assert ws.watched() == {"/etc/kata-containers": ("config",)}
    (tmp_path / "etc/kata-containers").rmdir()
    assert "config" in ws.tags(_events(ino))
    assert ws.sync([want])
    assert ws.watched() == {"/etc": ("config",)}
    (tmp_path / "etc/kata-containers").mkdir()
    assert "config" in ws.tags(_events(ino))
    ws.sync([want])
    assert ws.watched() == {"/etc/kata-containers": ("config",)}
    ws.sync([])  # nobody wants it any more: unwatched
    assert ws.watched() == {}
    ino.close()


def test_a_link_that_leads_outside_the_root_is_never_watched(tmp_path: Path) -> None:
    """A tree whose /run climbs out of --root: the want is refused (noted in the root's
    refusals), no watch is placed, and writes in the outside directory are never reported."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    (outside / "vc/sbs").mkdir(parents=True)
    os.symlink("../outside", root / "run")
    paths = HostPaths.at(root)
    ino = Inotify()
    ws = WatchSet(ino, paths)
    ws.sync([Want("/run/vc/sbs", None, "state")])
    assert ws.watched() == {}
    assert "climbs above --root" in next(iter(ws.errors.values()))
    assert any("climbs above --root" in r for r in paths.refusals.take())
    (outside / "vc/sbs/x").mkdir()
    assert _events(ino, 0.3) == []
    ino.close()


def test_a_want_watched_through_its_parent_is_placed_again_only_when_the_parent_speaks(
        tmp_path: Path) -> None:
    """Rounds with nothing new in the parent do not walk the tree again for a missing
    directory (each walk is a path resolution per level: half of a Kata round in the lab)."""
    ino = Inotify()
    ws = WatchSet(ino, HostPaths.at(tmp_path))
    want = Want("/run/vc/sbs", None, "state")
    placed: list[str] = []
    real = ws._place

    def counting(w: Want):  # type: ignore[no-untyped-def]
        placed.append(w.dir)
        return real(w)

    ws._place = counting  # type: ignore[method-assign]
    assert ws.sync([want])
    for _ in range(5):
        assert not ws.sync([want])
    assert placed == ["/run/vc/sbs"]
    assert ws.idle  # a caller may skip the sync of the same wants
    (tmp_path / "unrelated").mkdir()
    ws.tags(_events(ino))
    assert ws.idle
    assert not ws.sync([want])  # the parent spoke, but not of `run`
    assert placed == ["/run/vc/sbs"]
    (tmp_path / "run").mkdir()
    ws.tags(_events(ino))
    assert not ws.idle
    assert ws.sync([want]) and ws.watched() == {"/run": ("state",)}
    assert ws.idle and ws.moved_tags == {"state"}
