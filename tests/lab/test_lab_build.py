"""The lab build on this machine: its packages are installed, each artifact is checked, and a
broken step or artifact stops it with the step, the command and the cause (issue 15)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from tests.hostpackages import lacks, packages_sh, table
from tests.lab import labbuild, labvm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lab-console"


def test_every_lab_package_is_installed_after_the_build(lab_guest: labbuild.Guest) -> None:
    """The build installed deploy/packages.txt's lab group itself (on this machine cpio was
    `unknown ok not-installed` before: the old check took that for installed)."""
    res = packages_sh("missing", "lab")
    assert res.returncode == 0 and res.stdout.split() == [], res.stdout + res.stderr
    assert labbuild.qemu_has_igb()


@pytest.mark.parametrize("entry", [e for e in table() if e.group == "lab" and e.uses],
                         ids=lambda e: e.name)
def test_each_lab_package_ships_what_the_list_says(lab_guest: labbuild.Guest,
                                                   entry: object) -> None:
    """dpkg's file list of each lab package holds the commands and files its line names."""
    assert not lacks(entry), f"{entry}: dpkg -L does not list {lacks(entry)}"  # type: ignore[arg-type]


def test_the_built_artifacts_pass_their_checks(lab_guest: labbuild.Guest) -> None:
    """The real kernel is a bzImage, the initrd a gzip'd cpio with /init, busybox and the
    modules /init loads, the image ext4, the root file system a guest's with the lab in it."""
    labbuild.check_kernel_image(lab_guest.kernel)
    members = labbuild.check_initrd(lab_guest.initrd)
    assert {"init", "bin/busybox", "modules.load", "mods/virtio_blk.ko", "mods/ext4.ko"} <= set(
        members)
    labbuild.check_disk_image(lab_guest.image)
    root = labbuild.DEFAULT_CACHE / "rootfs"
    labbuild.check_rootfs(root, lab_guest.release, with_bcc=True)
    labbuild.check_guest_files(root, with_project=True)


@pytest.fixture
def kdir(lab_guest: labbuild.Guest) -> Path:
    return lab_guest.kernel.parents[1]


def test_the_initrd_step_without_cpio_fails_naming_cpio(lab_guest: labbuild.Guest, kdir: Path,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real initrd step, in a fresh cache, on a PATH without cpio (this machine before the
    fix, as far as the build can tell) stops at once naming the step, the command and the
    package, and leaves no initrd behind (it used to write a 20-byte one and go on)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    cache = labbuild.Cache(tmp_path / "cache")
    with pytest.raises(labbuild.LabBuildError) as err:
        labbuild.step("initrd", labbuild.initramfs, cache, lab_guest.release, kdir)
    msg = str(err.value)
    assert msg.startswith("lab build step 'initrd' failed: `cpio -o -H newc --quiet`"), msg
    assert "command 'cpio' not found" in msg and "Debian package cpio" in msg, msg
    assert "group lab" in msg, msg
    assert not (cache.root / "initrd.img").exists() and not (cache.root / "initrd.done").exists()


def test_a_cached_initrd_that_is_not_plausible_is_rebuilt(lab_guest: labbuild.Guest, kdir: Path,
                                                          tmp_path: Path) -> None:
    """A cache holding the issue's 20-byte initrd under a valid stamp (this machine's cache
    before the fix) gets a real initrd, not the stale one."""
    cache = labbuild.Cache(tmp_path / "cache")
    img = labbuild.initramfs(cache, lab_guest.release, kdir)
    shutil.copyfile(FIXTURES / "initrd-cpio-missing.img", img)
    again = labbuild.initramfs(cache, lab_guest.release, kdir)
    assert again.stat().st_size > 1_000_000
    assert "init" in labbuild.check_initrd(again)


def _real_initrd_without(lab_guest: labbuild.Guest, tmp_path: Path, name: str) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(labbuild.DEFAULT_CACHE / "initrd", tree, symlinks=True)
    (tree / name).unlink()
    listing = [".", *sorted("./" + str(p.relative_to(tree)) for p in tree.rglob("*"))]
    archive = labbuild.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree,
                           input=("\n".join(listing) + "\n").encode()).stdout
    out = tmp_path / "initrd.img"
    out.write_bytes(gzip.compress(archive, 1))
    return out


@pytest.mark.parametrize(("how", "says"), [
    ("gzip cut in half", "is not a complete gzip stream"),
    ("cpio cut in half", "does not hold a whole newc cpio archive: it ends inside"),
    ("no /init", "its cpio archive has no /init"),
    ("no busybox", "has no /bin/busybox"),
])
def test_a_broken_initrd_is_refused(lab_guest: labbuild.Guest, tmp_path: Path, how: str,
                                    says: str) -> None:
    """Each way the real initrd can be broken is named by the check."""
    data = lab_guest.initrd.read_bytes()
    bad = tmp_path / "bad.img"
    if how == "gzip cut in half":
        bad.write_bytes(data[: len(data) // 2])
    elif how == "cpio cut in half":
        archive = gzip.decompress(data)
        bad.write_bytes(gzip.compress(archive[: len(archive) // 2], 1))
    else:
        bad = _real_initrd_without(lab_guest, tmp_path, "init" if how == "no /init"
                                   else "bin/busybox")
    with pytest.raises(labbuild.LabBuildError, match=says):
        labbuild.check_initrd(bad)


def test_a_kernel_cut_short_is_refused(lab_guest: labbuild.Guest, tmp_path: Path) -> None:
    """The real kernel passes; its first 0x200 bytes (before the header) do not."""
    cut = tmp_path / "vmlinuz"
    cut.write_bytes(lab_guest.kernel.read_bytes()[:0x200])
    with pytest.raises(labbuild.LabBuildError, match="not a bzImage kernel"):
        labbuild.check_kernel_image(cut)


def _boot(guest: labbuild.Guest, tmp_path: Path) -> labvm.Boot:
    return labvm.boot(guest, "smoke", tmp_path / "run", timeout=300, stall_s=120)


def test_a_guest_given_the_issues_initrd_fails_at_once_saying_so(lab_guest: labbuild.Guest,
                                                                 tmp_path: Path) -> None:
    """Booted with the 20-byte initrd of issue 15, the guest's panic is reported as a panic
    while unpacking the initrd, with the console's path and its lines up to the panic."""
    guest = labbuild.Guest(release=lab_guest.release, kernel=lab_guest.kernel,
                           initrd=FIXTURES / "initrd-cpio-missing.img", image=lab_guest.image)
    res = _boot(guest, tmp_path)
    assert not res.stalled and not res.ok
    assert res.failure.startswith("the guest kernel panicked while unpacking the initrd"), res.failure
    text = res.explain()
    assert str(tmp_path / "run" / "console.log") in text
    assert "Initramfs unpacking failed: junk at the end of compressed archive" in text


def test_qemu_refusing_the_kernel_is_reported_with_its_words(lab_guest: labbuild.Guest,
                                                             tmp_path: Path) -> None:
    """A file that is not a kernel: QEMU's own error, not an empty status."""
    guest = labbuild.Guest(release=lab_guest.release, kernel=lab_guest.initrd,
                           initrd=lab_guest.initrd, image=lab_guest.image)
    res = _boot(guest, tmp_path)
    assert res.failure.startswith("QEMU exited 1 before the guest printed anything: qemu:"), (
        res.failure, res.console)
