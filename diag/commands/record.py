"""Provides `vfiowatch record sysfs`: copy exactly the sysfs files the scanner reads into a tree.

The copy keeps symlinks as relative links inside the copy, so `scan(HostPaths(out))` on it gives
the same inventory as on the host. This is how the fixture trees in tests/fixtures/sysfs/ are
made. It reads the host and writes only under `out`.

It never deletes what it did not write. `out` must be new, empty, or an earlier recording: the
recorder leaves a marker, `.vfiowatch-recording` (JSON: version, time, root, and every path it
created), and replaces an earlier recording by removing exactly the paths its marker lists,
after checking that the directory holds nothing else. The list, not the marker's mere presence,
is what allows a deletion: a marker copied into another directory, or a file a user added
inside a recording, makes the directory hold unlisted paths, and it is refused untouched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from diag import __version__
from diag.commands import Command, refused_lines, register
from diag.common.errors import DiagError
from diag.common.paths import HostPaths

MARKER = ".vfiowatch-recording"
HINT = "choose a new or empty directory (e.g. --out ./sysfs-$(hostname)), or an earlier recording"


class RecordRefused(DiagError):
    """`--out` is not a directory the recorder may write (nothing was changed)."""

    title = "Cannot record"

DEVICE_FILES = (
    "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision",
    "driver_override", "numa_node", "enable", "sriov_numvfs", "sriov_totalvfs",
    "sriov_drivers_autoprobe", "modalias",
)
DEVICE_LINKS = ("driver", "iommu_group", "physfn")
NET_FILES = ("address", "operstate", "ifindex", "carrier")


def _listed(out: Path) -> set[str] | None:
    """The paths an earlier recording's marker lists (relative to `out`), None when `out`
    holds no readable marker of ours."""
    marker = out / MARKER
    try:
        if not stat.S_ISREG(marker.lstat().st_mode):
            return None
        doc = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if doc.get("tool") != "vfiowatch record sysfs" or not isinstance(entries, list):
        return None
    return {e for e in entries if isinstance(e, str) and e and not os.path.isabs(e)
            and ".." not in e.split("/")}


def _present(out: Path) -> list[tuple[str, bool]]:
    """Every path under `out` (marker aside) as (relative path, is a directory), deepest
    first; links are listed, never followed."""
    found: list[tuple[str, bool]] = []
    for dirpath, dirnames, filenames in os.walk(out, topdown=False):
        rel = os.path.relpath(dirpath, out)
        for name in filenames + dirnames:
            p = name if rel == "." else f"{rel}/{name}"
            if p in (MARKER, MARKER + ".tmp"):
                continue
            is_dir = name in dirnames and not os.path.islink(os.path.join(dirpath, name))
            found.append((p, is_dir))
    return found


def prepare_out(out: Path) -> None:
    """Make `out` ready for a recording, or raise RecordRefused having changed nothing."""
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        raise RecordRefused(f"{out} exists and is not a directory: nothing was written", hint=HINT)
    if not out.exists():
        out.mkdir(parents=True)
        return
    present = _present(out)
    if not present and not (out / MARKER).exists():
        return
    listed = _listed(out)
    if listed is None:
        raise RecordRefused(
            f"{out} is not empty and is not an earlier recording (it has no {MARKER}): "
            "nothing was deleted", hint=HINT)
    unlisted = sorted(p for p, _ in present if p not in listed)
    if unlisted:
        more = f" (+{len(unlisted) - 3} more)" if len(unlisted) > 3 else ""
        raise RecordRefused(
            f"{out} is an earlier recording, but holds paths the recorder did not write: "
            f"{', '.join(unlisted[:3])}{more}; nothing was deleted",
            hint="move those away, or choose a new or empty directory")
    for p, is_dir in present:  # deepest first: a directory is empty when its turn comes
        target = out / p
        if is_dir:
            target.rmdir()
        else:
            target.unlink()
    (out / MARKER).unlink()


class _Copier:
    """Copies host paths (read under the root, confined) to the same paths under `dst`,
    remembering every path it creates (the marker lists them)."""

    def __init__(self, paths: HostPaths, dst_root: Path) -> None:
        self.paths = paths
        self.dst = dst_root
        self.files = 0
        self.created: set[str] = set()

    def _target(self, real: str) -> Path:
        # `real` comes from paths.resolve: absolute, without `..`, so it stays under dst.
        return self.dst / real.lstrip("/")

    def _note(self, p: Path) -> None:
        self.created.add(p.relative_to(self.dst).as_posix())

    def mkdirs(self, d: Path) -> None:
        missing = []
        while d != self.dst and not d.is_dir():
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            m.mkdir()
            self._note(m)

    def dir(self, host: str) -> None:
        try:
            real = self.paths.resolve(host)
        except OSError:
            return
        self.mkdirs(self._target(real))

    def touch(self, p: Path) -> None:
        self.mkdirs(p.parent)
        p.touch()
        self._note(p)

    def file(self, host: str) -> None:
        try:
            real = self.paths.resolve(host)
            data = self.paths.read_bytes(real, 65536, regular=True)
        except OSError:
            return  # missing, write-only or refused: the scanner meets it the same way
        out = self._target(real)
        self.mkdirs(out.parent)
        out.write_bytes(data)
        self._note(out)
        self.files += 1

    def link(self, host: str) -> None:
        """Recreate the symlink `host` (inside the copy) pointing at the same relative target."""
        if not self.paths.is_link(host):
            return
        try:
            parent_real = self.paths.resolve(os.path.dirname(host))
            target_real = self.paths.resolve(host, strict=False)
        except OSError:
            return
        out = self._target(parent_real) / os.path.basename(host)
        self.mkdirs(out.parent)
        rel = os.path.relpath(self._target(target_real), out.parent)
        if out.is_symlink() or out.exists():
            out.unlink()  # written by this recording already (a link met twice)
        out.symlink_to(rel)
        self._note(out)
        if self.paths.is_dir(target_real):
            self.mkdirs(self._target(target_real))

    def listdir(self, host: str) -> list[str]:
        try:
            return sorted(self.paths.listdir(host))
        except OSError:
            return []


def _write_marker(out: Path, paths: HostPaths, created: set[str], *, complete: bool) -> None:
    doc: dict[str, Any] = {
        "tool": "vfiowatch record sysfs", "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "root": str(paths.root),
        "complete": complete, "entries": sorted(created),
    }
    tmp = out / (MARKER + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / MARKER)


def record_sysfs(paths: HostPaths, out: Path) -> int:
    """Copy the PCI view of `paths` into `out` (new, empty, or an earlier recording: see the
    module docstring; RecordRefused otherwise); returns the number of files copied. Paths that
    lead outside the root are not copied (they are in `paths.refusals`)."""
    paths.require_sysfs()
    prepare_out(out)
    c = _Copier(paths, out)
    _write_marker(out, paths, c.created, complete=False)  # a kill -9 leaves a marked tree
    try:
        _record(paths, c)
    finally:
        with contextlib.suppress(OSError):
            _write_marker(out, paths, c.created, complete=True)
    return c.files


def _record(paths: HostPaths, c: _Copier) -> None:
    out = c.dst
    devs = "/sys/bus/pci/devices"
    c.dir(devs)
    for bdf in c.listdir(devs):
        link = f"{devs}/{bdf}"
        c.link(link)
        try:
            real = paths.resolve(link)
        except OSError:
            continue
        c.dir(real)
        for name in DEVICE_FILES:
            c.file(f"{real}/{name}")
        for name in DEVICE_LINKS:
            c.link(f"{real}/{name}")
        for name in c.listdir(real):
            if name.startswith("virtfn"):
                c.link(f"{real}/{name}")
        group = f"{real}/iommu_group"
        if paths.is_link(group):
            for member in c.listdir(f"{group}/devices"):
                c.link(f"{group}/devices/{member}")
        for ifname in c.listdir(f"{real}/net"):
            nd = f"{real}/net/{ifname}"
            c.dir(nd)
            for name in NET_FILES:
                c.file(f"{nd}/{name}")
            c.link(f"/sys/class/net/{ifname}")
        for name in c.listdir(f"{real}/vfio-dev"):
            c.dir(f"{real}/vfio-dev/{name}")
    for name in c.listdir("/sys/bus/pci/drivers"):
        c.dir(f"/sys/bus/pci/drivers/{name}")
    c.mkdirs(out / "sys" / "class" / "iommu")
    for name in c.listdir("/sys/class/iommu"):
        c.link(f"/sys/class/iommu/{name}")
    if paths.is_dir("/dev/vfio"):
        c.mkdirs(out / "dev" / "vfio")
        for name in c.listdir("/dev/vfio"):
            if name.isdigit():
                # Character devices cannot be copied; an empty file stands for the node.
                c.touch(out / "dev" / "vfio" / name)


def _arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    s = what.add_parser(
        "sysfs",
        help="copy the sysfs files the PCI scanner reads into a directory tree",
        description=(
            "Copy exactly the sysfs files the PCI scanner reads (ids, class, driver links, "
            "driver_override, IOMMU groups, SR-IOV links, net/) into OUT, keeping symlinks as "
            "relative links, so `vfiowatch --root OUT snapshot` shows the same inventory. "
            "Reads the host; writes only under OUT, and deletes nothing it did not write: OUT "
            "must be new, empty, or an earlier recording (marked by OUT/.vfiowatch-recording, "
            "which lists what it wrote; only that is replaced)."
        ),
    )
    s.add_argument("--out", required=True, type=Path,
                   help="directory to write: new, empty, or an earlier recording (replaced)")
    s.set_defaults(func=_run_sysfs)


def _run_sysfs(args: argparse.Namespace) -> int:
    paths = HostPaths.at(args.root)
    n = record_sysfs(paths, args.out)
    print(f"copied {n} files to {args.out}")
    for line in refused_lines(paths, " (not copied)"):
        print(line, file=sys.stderr)
    return 0


register(Command(
    name="record",
    help="record kernel data as test fixtures",
    description="Record what the agent reads, in the formats of tests/fixtures/.",
    arguments=_arguments,
    run=None,
))
