"""Provides readers of the distribution's package databases (dpkg, rpm) for Kata's packages.

Read as files under the root; dpkg and rpm are never run.

- dpkg: `/var/lib/dpkg/status` (RFC 822 stanzas: Package, Status, Version, Architecture) and
  `/var/lib/dpkg/info/<package>[:<arch>].list` (the files a package installed), so the package
  that owns a shim's path is found, not merely a package with a Kata-like name.
- rpm, sqlite format (`rpmdb.sqlite`, rpm >= 4.16: Fedora >= 33, RHEL/CentOS Stream 9,
  openSUSE since 2024): table `Packages(hnum, blob)`, each blob an rpm header (index entries +
  data store, big-endian) read for NAME, VERSION, RELEASE, EPOCH and the file list (BASENAMES,
  DIRNAMES, DIRINDEXES). The file (and its WAL) is copied through HostPaths into a private
  directory and SQLite opens the copy: nothing is ever written beside the host's database.
- rpm, Berkeley DB (`Packages`, RHEL <= 8) and ndb (`Packages.db`): found and named, not read.
  Python has no reader of either format, and the rpm available to this project's tests
  (Debian's 4.18) writes only sqlite ("invalid %_db_backend: bdb/ndb"), so a reader could not be
  tested on a real database; the other version sources are used instead and the finding says so.
"""

from __future__ import annotations

import os
import re
import sqlite3
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote

from diag.common.paths import HostPaths, OutsideRoot

DPKG_ADMINDIR = "/var/lib/dpkg"
RPM_DIRS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
KATA_NAME = re.compile(r"^(kata-containers|kata-runtime|kata|kata-containers-runtime|kata-shim-v2)(?:[-:].*)?$")
"""Package names that are Kata's runtime (Fedora/openSUSE `kata-containers`, Kata's old OBS
`kata-runtime`); the shim path's owner is preferred over these."""
MAX_STATUS_BYTES = 64 << 20
MAX_LIST_BYTES = 8 << 20
MAX_HEADER_BYTES = 32 << 20
MAX_DB_BYTES = 512 << 20
"""An rpm database larger than this is not copied (Fedora's is some tens of MiB)."""

TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_ARCH = 1000, 1001, 1002, 1003, 1022
TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES = 1116, 1117, 1118
T_INT32, T_STRING, T_STRING_ARRAY, T_I18NSTRING = 4, 6, 8, 9


@dataclass(frozen=True, slots=True)
class Package:
    """One installed package as its database records it."""

    manager: str
    """`dpkg` or `rpm`."""
    name: str
    version: str
    """The full package version: `1:3.8.0-1` (dpkg), `3.8.0-1.fc41` (rpm, epoch: prefix when set)."""
    upstream: str
    """The upstream version alone (`3.8.0`)."""
    arch: str = ""
    db: str = ""
    """The database file it was read from (host path)."""
    files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PackageScan:
    """What the package databases under the root say about Kata."""

    packages: tuple[Package, ...] = ()
    """Kata-named packages and the owners of the paths asked about."""
    owners: tuple[tuple[str, Package], ...] = ()
    """(host path, package owning it)."""
    notes: tuple[str, ...] = ()
    """Databases found but not read, and why; read errors."""

    def owner(self, path: str) -> Package | None:
        return next((p for q, p in self.owners if q == path), None)


# ---- dpkg ----------------------------------------------------------------------------------


def parse_dpkg_status(text: str) -> Iterator[dict[str, str]]:
    """The stanzas of a dpkg status file (continuation lines joined, keys as written)."""
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        if fields.get("Package"):
            yield fields


def dpkg_upstream(version: str) -> str:
    """`1:3.8.0-1` -> `3.8.0`; `3.8.0~rc1-2` -> `3.8.0~rc1` (epoch and Debian revision dropped)."""
    v = version.split(":", 1)[1] if re.match(r"^\d+:", version) else version
    return v.rsplit("-", 1)[0] if "-" in v else v


def _read(paths: HostPaths, host_path: str, limit: int) -> bytes | None:
    try:
        return paths.read_bytes(host_path, limit, regular=True)
    except OSError:
        return None


def read_dpkg(paths: HostPaths, want_paths: Iterable[str], admindir: str = DPKG_ADMINDIR) -> PackageScan:
    """Kata packages and the owners of `want_paths` from dpkg's status file and file lists."""
    status_path = f"{admindir}/status"
    raw = _read(paths, status_path, MAX_STATUS_BYTES)
    if raw is None:
        return PackageScan()
    want = list(dict.fromkeys(want_paths))
    pkgs: list[Package] = []
    owners: list[tuple[str, Package]] = []
    for st in parse_dpkg_status(raw.decode("utf-8", "replace")):
        if st.get("Status", "").split()[-1:] != ["installed"]:  # "install ok installed"
            continue
        name, arch = st["Package"], st.get("Architecture", "")
        files: tuple[str, ...] = ()
        owned: list[str] = []
        if want:
            for list_name in (f"{name}:{arch}.list", f"{name}.list"):
                lst = _read(paths, f"{admindir}/info/{list_name}", MAX_LIST_BYTES)
                if lst is not None:
                    listed = set(lst.decode("utf-8", "replace").splitlines())
                    owned = [p for p in want if p in listed]
                    break
        if not owned and not KATA_NAME.match(name):
            continue
        files = tuple(owned)
        version = st.get("Version", "")
        pkg = Package("dpkg", name, version, dpkg_upstream(version), arch, status_path, files)
        pkgs.append(pkg)
        owners.extend((p, pkg) for p in owned)
    return PackageScan(tuple(pkgs), tuple(owners))


# ---- rpm -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RpmHeader:
    """The tags of an rpm header this reader needs."""

    name: str
    version: str
    release: str
    epoch: int | None
    arch: str
    files: tuple[str, ...]


class BadHeader(ValueError):
    """An rpm header blob that does not parse."""


def parse_rpm_header(blob: bytes) -> RpmHeader:
    """An rpm header as stored in rpmdb.sqlite: il, dl, il index entries, dl bytes of data."""
    if len(blob) < 8:
        raise BadHeader("header shorter than 8 bytes")
    il, dl = struct.unpack_from(">II", blob, 0)
    if il > 100_000 or 8 + 16 * il + dl > len(blob):
        raise BadHeader(f"header sizes il={il} dl={dl} exceed the blob ({len(blob)} bytes)")
    store = 8 + 16 * il
    tags: dict[int, tuple[int, int, int]] = {}
    for i in range(il):
        tag, typ, off, cnt = struct.unpack_from(">IIiI", blob, 8 + 16 * i)
        if 0 <= off < dl:
            tags[tag] = (typ, store + off, cnt)

    def strings(tag: int) -> list[str]:
        if tag not in tags:
            return []
        typ, off, cnt = tags[tag]
        if typ not in (T_STRING, T_STRING_ARRAY, T_I18NSTRING):
            return []
        out, pos = [], off
        for _ in range(cnt if typ != T_STRING else 1):
            end = blob.find(b"\x00", pos, store + dl)
            if end < 0:
                raise BadHeader(f"unterminated string of tag {tag}")
            out.append(blob[pos:end].decode("utf-8", "replace"))
            pos = end + 1
        return out

    def ints(tag: int) -> list[int]:
        if tag not in tags or tags[tag][0] != T_INT32:
            return []
        _t, off, cnt = tags[tag]
        if off + 4 * cnt > store + dl:
            raise BadHeader(f"INT32 array of tag {tag} runs past the data")
        return list(struct.unpack_from(f">{cnt}i", blob, off))

    def one(tag: int) -> str:
        s = strings(tag)
        return s[0] if s else ""

    base, dirs, idx = strings(TAG_BASENAMES), strings(TAG_DIRNAMES), ints(TAG_DIRINDEXES)
    files = tuple(dirs[d] + b for b, d in zip(base, idx, strict=False) if 0 <= d < len(dirs))
    ep = ints(TAG_EPOCH)
    return RpmHeader(one(TAG_NAME), one(TAG_VERSION), one(TAG_RELEASE), ep[0] if ep else None,
                     one(TAG_ARCH), files)


def read_rpm(paths: HostPaths, want_paths: Iterable[str]) -> PackageScan:
    """Kata packages and the owners of `want_paths` from rpm's sqlite database."""
    want = set(want_paths)
    notes: list[str] = []
    for d in RPM_DIRS:
        sqlite_db = f"{d}/rpmdb.sqlite"
        if paths.is_file(sqlite_db):
            return _read_rpm_sqlite(paths, sqlite_db, want)
        for other, fmt in (("Packages", "Berkeley DB"), ("Packages.db", "ndb")):
            if paths.is_file(f"{d}/{other}"):
                notes.append(f"rpm database {d}/{other} is in {fmt} format: not read (only rpmdb.sqlite "
                             "is); the version comes from the other sources")
    return PackageScan(notes=tuple(notes))


def _read_rpm_sqlite(paths: HostPaths, host_path: str, want: set[str]) -> PackageScan:
    # Read through HostPaths (under --root no link out of the root is followed, no FIFO or
    # device opened) into a private copy, with its WAL when it has one: SQLite is never handed
    # a host path (it would reopen it by name, and even `mode=ro` writes the WAL index beside
    # the database). The copy is made only when the database's stat changed (the caller caches).
    with tempfile.TemporaryDirectory(prefix="vfiowatch-rpmdb-") as tmp:
        for suffix in ("", "-wal"):
            try:
                with paths.open_file(host_path + suffix) as src, \
                        open(os.path.join(tmp, "rpmdb.sqlite" + suffix), "wb") as out:
                    copied = _copy(src, out, MAX_DB_BYTES)
            except FileNotFoundError:
                if suffix:
                    continue
                return PackageScan(notes=(f"{host_path}: not found",))
            except OSError as exc:
                why = str(exc) if isinstance(exc, OutsideRoot) else (exc.strerror or str(exc))
                return PackageScan(notes=(f"{host_path + suffix}: {why}",))
            if not copied:
                return PackageScan(notes=(f"{host_path + suffix}: larger than {MAX_DB_BYTES >> 20} MiB, "
                                          "not read; the version comes from the other sources",))
        return _query_rpm(f"file:{quote(os.path.join(tmp, 'rpmdb.sqlite'))}", host_path, want)


def _copy(src: BinaryIO, out: BinaryIO, limit: int) -> bool:
    """Copy at most `limit` bytes; False when the source is larger."""
    left = limit
    while True:
        chunk = src.read(min(1 << 20, left + 1))
        if not chunk:
            return True
        if len(chunk) > left:
            return False
        out.write(chunk)
        left -= len(chunk)


def _query_rpm(uri: str, host_path: str, want: set[str]) -> PackageScan:
    pkgs: list[Package] = []
    owners: list[tuple[str, Package]] = []
    notes: list[str] = []
    try:
        con = sqlite3.connect(uri, uri=True, timeout=1.0)
    except sqlite3.Error as exc:
        return PackageScan(notes=(f"{host_path}: {exc}",))
    try:
        rows = con.execute("SELECT hnum, blob FROM Packages")
        for hnum, blob in rows:
            if not isinstance(blob, bytes) or len(blob) > MAX_HEADER_BYTES:
                continue
            try:
                h = parse_rpm_header(blob)
            except BadHeader as exc:
                notes.append(f"{host_path}: package #{hnum}: {exc}")
                continue
            owned = [p for p in h.files if p in want]
            if not owned and not KATA_NAME.match(h.name):
                continue
            full = (f"{h.epoch}:" if h.epoch else "") + f"{h.version}-{h.release}"
            pkg = Package("rpm", h.name, full, h.version, h.arch, host_path, tuple(owned))
            pkgs.append(pkg)
            owners.extend((p, pkg) for p in owned)
    except sqlite3.Error as exc:
        notes.append(f"{host_path}: {exc}")
    finally:
        con.close()
    return PackageScan(tuple(pkgs), tuple(owners), tuple(notes))


def scan(paths: HostPaths, want_paths: Iterable[str]) -> PackageScan:
    """Both databases: Kata packages and the owners of `want_paths` (the shims' paths)."""
    want = list(want_paths)
    d, r = read_dpkg(paths, want), read_rpm(paths, want)
    return PackageScan(d.packages + r.packages, d.owners + r.owners, d.notes + r.notes)


DB_FILES = (f"{DPKG_ADMINDIR}/status", *(f"{d}/{n}" for d in RPM_DIRS
                                         for n in ("rpmdb.sqlite", "rpmdb.sqlite-wal", "Packages", "Packages.db")))
"""The database files whose change can change a scan."""


class ScanCache:
    """`scan` again only when a database file's stat or the paths asked about changed."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._scan = PackageScan()
        self.scans = 0

    def scan(self, paths: HostPaths, want_paths: Iterable[str]) -> PackageScan:
        want = tuple(dict.fromkeys(want_paths))
        stats: list[object] = []
        for f in DB_FILES:
            try:
                st = paths.stat(f)
                stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stats.append(None)
        key = (want, *stats)
        if key != self._key:
            self._key, self._scan = key, scan(paths, want)
            self.scans += 1
        return self._scan
