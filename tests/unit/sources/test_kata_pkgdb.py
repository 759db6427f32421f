"""The package-database readers on databases written by the real dpkg and rpm (never run by the agent)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from diag.common.paths import HostPaths
from diag.sources.kata import pkgdb
from tests.katapkgs import CONFIG, SHIM, dpkg_install, rpm_install, rpm_missing

FILES = {SHIM: b"\x7fELF stands for the shim\n", CONFIG: b"[hypervisor.qemu]\ncold_plug_vfio = \"no-port\"\n"}
SHIM_PATH = "/" + SHIM


def snapshot(tree: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in tree.rglob("*") if p.is_file()}


def test_dpkg_status_written_by_dpkg_gives_the_owner_of_the_shim(tmp_path: Path) -> None:
    """dpkg --root installs kata-containers 3.8.0-1: the shim's owner, its version and upstream 3.8.0."""
    tree = tmp_path / "tree"
    dpkg_install(tree, tmp_path, files=FILES)
    scan = pkgdb.read_dpkg(HostPaths.at(tree), [SHIM_PATH, "/opt/kata/bin/containerd-shim-kata-v2"])
    owner = scan.owner(SHIM_PATH)
    assert owner is not None
    assert (owner.manager, owner.name, owner.version, owner.upstream, owner.arch, owner.db) == (
        "dpkg", "kata-containers", "3.8.0-1", "3.8.0", "amd64", "/var/lib/dpkg/status")
    assert scan.owner("/opt/kata/bin/containerd-shim-kata-v2") is None


def test_dpkg_owner_is_found_by_its_file_list_whatever_its_name(tmp_path: Path) -> None:
    """A package with a non-Kata name that installed the shim is its owner (info/<pkg>.list)."""
    tree = tmp_path / "tree"
    dpkg_install(tree, tmp_path, name="acme-sandbox-runtime", version="1:3.9.0-2acme1", files=FILES)
    owner = pkgdb.read_dpkg(HostPaths.at(tree), [SHIM_PATH]).owner(SHIM_PATH)
    assert owner is not None and (owner.name, owner.upstream) == ("acme-sandbox-runtime", "3.9.0")


def test_dpkg_removed_package_with_config_files_left_is_not_installed(tmp_path: Path) -> None:
    """`dpkg -r` leaves 'deinstall ok config-files': not an installed Kata."""
    tree = tmp_path / "tree"
    etc = "etc/kata-containers/configuration.toml"
    dpkg_install(tree, tmp_path, files={**FILES, etc: b"[hypervisor.qemu]\n"}, conffiles=(etc,))
    subprocess.run(["dpkg", f"--root={tree}", "--force-not-root", "--log=/dev/null", "-r", "kata-containers"],
                   check=True, capture_output=True)
    status = (tree / "var/lib/dpkg/status").read_text()
    assert "config-files" in status
    assert pkgdb.read_dpkg(HostPaths.at(tree), [SHIM_PATH]).packages == ()


@pytest.fixture
def rpm_ok() -> None:
    why = rpm_missing()
    assert not why, why


@pytest.mark.usefixtures("rpm_ok")
def test_rpm_sqlite_written_by_rpm_gives_the_owner_and_epoch(tmp_path: Path) -> None:
    """rpm --justdb records kata-containers 2:3.8.0-1.fc41: read from rpmdb.sqlite's header blobs."""
    tree = tmp_path / "tree"
    rpm_install(tree, tmp_path, epoch=2, files=FILES)
    scan = pkgdb.read_rpm(HostPaths.at(tree), [SHIM_PATH])
    owner = scan.owner(SHIM_PATH)
    assert owner is not None
    assert (owner.manager, owner.name, owner.version, owner.upstream, owner.arch, owner.db) == (
        "rpm", "kata-containers", "2:3.8.0-1.fc41", "3.8.0", "x86_64", "/var/lib/rpm/rpmdb.sqlite")
    assert scan.notes == ()


@pytest.mark.usefixtures("rpm_ok")
def test_reading_the_rpm_database_writes_nothing(tmp_path: Path) -> None:
    """The sqlite database is opened read-only: no file under the tree changes (WAL and shm included)."""
    tree = tmp_path / "tree"
    rpm_install(tree, tmp_path, files=FILES)
    before = snapshot(tree)
    assert pkgdb.read_rpm(HostPaths.at(tree), [SHIM_PATH]).owner(SHIM_PATH) is not None
    assert snapshot(tree) == before


@pytest.mark.usefixtures("rpm_ok")
def test_a_broken_rpm_header_is_named_and_the_others_read(tmp_path: Path) -> None:
    """A header blob cut short is a note naming the database and package number, not a traceback."""
    tree = tmp_path / "tree"
    db = rpm_install(tree, tmp_path, files=FILES)
    con = sqlite3.connect(db)
    blob = con.execute("SELECT blob FROM Packages").fetchone()[0]
    con.execute("INSERT INTO Packages (hnum, blob) VALUES (99, ?)", (blob[:40],))
    con.commit()
    con.close()
    scan = pkgdb.read_rpm(HostPaths.at(tree), [SHIM_PATH])
    assert scan.owner(SHIM_PATH) is not None
    assert scan.notes == ("/var/lib/rpm/rpmdb.sqlite: package #99: header sizes il=" +
                          f"{int.from_bytes(blob[:4], 'big')} dl={int.from_bytes(blob[4:8], 'big')} exceed the blob "
                          "(40 bytes)",)


def test_berkeley_db_and_ndb_databases_are_named_not_read(tmp_path: Path) -> None:
    """Packages (BDB) and Packages.db (ndb) are said to be present and not read, with where."""
    (tmp_path / "var/lib/rpm").mkdir(parents=True)
    (tmp_path / "var/lib/rpm/Packages").write_bytes(b"\0" * 4096)
    (tmp_path / "usr/lib/sysimage/rpm").mkdir(parents=True)
    (tmp_path / "usr/lib/sysimage/rpm/Packages.db").write_bytes(b"RpmP" + b"\0" * 60)
    scan = pkgdb.read_rpm(HostPaths.at(tmp_path), [SHIM_PATH])
    assert scan.packages == ()
    assert scan.notes == (
        "rpm database /var/lib/rpm/Packages is in Berkeley DB format: not read (only rpmdb.sqlite is); the "
        "version comes from the other sources",
        "rpm database /usr/lib/sysimage/rpm/Packages.db is in ndb format: not read (only rpmdb.sqlite is); "
        "the version comes from the other sources")


def test_no_package_database_is_an_empty_scan(tmp_path: Path) -> None:
    """A root without dpkg or rpm databases gives nothing and no error."""
    assert pkgdb.scan(HostPaths.at(tmp_path), [SHIM_PATH]) == pkgdb.PackageScan()


def test_dpkg_status_parser_on_stanzas_as_dpkg_writes_them() -> None:
    """Continuation lines join their field; stanzas split on blank lines."""
    text = ("Package: kata-containers\nStatus: install ok installed\nVersion: 3.8.0-1\nDescription: a\n b\n\n"
            "Package: other\nStatus: deinstall ok config-files\nVersion: 1\n")
    got = list(pkgdb.parse_dpkg_status(text))
    assert [g["Package"] for g in got] == ["kata-containers", "other"]
    assert got[0]["Description"] == "a\nb"


def test_unreadable_status_is_no_scan(tmp_path: Path) -> None:
    """A status path that is a directory (or unreadable) gives an empty scan."""
    (tmp_path / "var/lib/dpkg/status").mkdir(parents=True)
    assert pkgdb.read_dpkg(HostPaths.at(tmp_path), [SHIM_PATH]) == pkgdb.PackageScan()
    assert os.path.isdir(tmp_path / "var/lib/dpkg/status")


@pytest.mark.usefixtures("rpm_ok")
def test_frames_still_in_the_wal_are_read_from_a_private_copy(tmp_path: Path) -> None:
    """While rpm holds the database open with uncheckpointed WAL frames, they are read, and nothing there is written."""
    tree = tmp_path / "tree"
    db = rpm_install(tree, tmp_path, files=FILES)
    writer = sqlite3.connect(db)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        blob = writer.execute("SELECT blob FROM Packages").fetchone()[0]
        writer.execute("INSERT INTO Packages (hnum, blob) VALUES (7, ?)", (blob,))
        writer.commit()
        assert os.path.getsize(str(db) + "-wal") > 0
        before = snapshot(tree)
        scan = pkgdb.read_rpm(HostPaths.at(tree), [SHIM_PATH])
        assert len(scan.packages) == 2
        assert snapshot(tree) == before
    finally:
        writer.close()
