"""The lab build's own checks, on the issue's real broken initrd and files that are not what
they claim: each is refused with what is wrong, and a failing command names itself and its
stderr."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.lab import labbuild

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lab-console"


def test_the_issues_20_byte_initrd_is_refused() -> None:
    """The initrd the build wrote without cpio (a gzip stream of nothing) is named as such."""
    with pytest.raises(labbuild.LabBuildError,
                       match=r"\(20 bytes\) is a gzip stream of nothing: no cpio archive"):
        labbuild.check_initrd(FIXTURES / "initrd-cpio-missing.img")


def test_a_file_that_is_not_gzip_is_refused_as_an_initrd() -> None:
    """A console log given as the initrd is not a gzip stream."""
    with pytest.raises(labbuild.LabBuildError, match="is not a complete gzip stream"):
        labbuild.check_initrd(FIXTURES / "smoke-ok.console.log")


def test_gzip_of_something_that_is_not_cpio_is_refused(tmp_path: Path) -> None:
    """A whole gzip stream whose content is not a newc archive."""
    img = tmp_path / "initrd.img"
    img.write_bytes(gzip.compress(b"hello, not cpio\n" * 20))
    with pytest.raises(labbuild.LabBuildError, match="no newc header at byte 0"):
        labbuild.check_initrd(img)


def test_a_missing_initrd_is_named(tmp_path: Path) -> None:
    with pytest.raises(labbuild.LabBuildError, match=f"initrd {tmp_path}/none.img: "):
        labbuild.check_initrd(tmp_path / "none.img")


@pytest.mark.parametrize("name", ["initrd-cpio-missing.img", "smoke-ok.console.log"])
def test_a_file_that_is_not_a_kernel_is_refused(name: str) -> None:
    """No "HdrS" at 0x202: not a bzImage (the real kernel passes in tests/lab)."""
    with pytest.raises(labbuild.LabBuildError, match="is not a bzImage kernel: no 'HdrS'"):
        labbuild.check_kernel_image(FIXTURES / name)


def test_an_empty_root_file_system_is_refused_naming_what_it_lacks(tmp_path: Path) -> None:
    """An empty folder lacks python3, the shell and the module index, each named."""
    with pytest.raises(labbuild.LabBuildError) as err:
        labbuild.check_rootfs(tmp_path, "6.12.95+deb12-amd64", with_bcc=False)
    msg = str(err.value)
    for what in ("/usr/bin/python3", "/bin/sh", "/usr/lib/modules/6.12.95+deb12-amd64/modules.dep"):
        assert what in msg, msg


def test_links_in_the_guest_root_never_resolve_on_the_host(tmp_path: Path) -> None:
    """usr/bin/python3 -> /usr/bin/python3.11 (absolute) is looked up inside the root: the
    host's own python3.11 does not make an empty root pass."""
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "python3").symlink_to("/usr/bin/python3.11")
    assert Path("/usr/bin/python3.11").exists()  # on the host it does exist
    assert labbuild.in_root(tmp_path, "usr/bin/python3") is None
    (tmp_path / "usr" / "bin" / "python3.11").write_text("")
    (tmp_path / "bin").symlink_to("usr/bin")
    assert labbuild.in_root(tmp_path, "bin/python3") == tmp_path / "usr" / "bin" / "python3.11"


def test_a_root_without_the_lab_files_is_refused(tmp_path: Path) -> None:
    """The guest files check names /lab/init and the scenarios when they are missing."""
    with pytest.raises(labbuild.LabBuildError) as err:
        labbuild.check_guest_files(tmp_path, with_project=True)
    msg = str(err.value)
    assert "/lab/init" in msg and "/lab/guest/scenario_agent.py" in msg
    assert "/usr/local/bin/vfiowatch" in msg


def test_a_file_that_is_not_ext4_is_refused_as_the_disk_image() -> None:
    with pytest.raises(labbuild.LabBuildError, match="is not ext4"):
        labbuild.check_disk_image(FIXTURES / "initrd-cpio-missing.img")


def test_a_failing_command_is_named_with_its_exit_status_and_stderr(tmp_path: Path) -> None:
    """A real dpkg-deb failure: the message quotes the command line and dpkg-deb's stderr."""
    with pytest.raises(labbuild.LabBuildError) as err:
        labbuild.run(["dpkg-deb", "-x", str(tmp_path / "no.deb"), str(tmp_path / "x")])
    msg = str(err.value)
    assert msg.startswith(f"`dpkg-deb -x {tmp_path}/no.deb {tmp_path}/x` exited 2; its stderr:")
    assert "dpkg-deb: error: failed to read archive" in msg


def test_a_missing_command_is_named_with_the_package_that_ships_it(tmp_path: Path) -> None:
    """With cpio off the PATH, the error names cpio, its package and its group in the list."""
    with pytest.raises(labbuild.LabBuildError) as err:
        labbuild.run(["cpio", "-o"], env={"PATH": str(tmp_path)})
    assert "command 'cpio' not found on PATH; it comes from the Debian package cpio " \
        "(deploy/packages.txt, group lab" in str(err.value)


def test_a_step_names_itself_in_any_failure(tmp_path: Path) -> None:
    """Unforeseen errors in a step (here an OSError) also say which step stopped."""
    with pytest.raises(labbuild.LabBuildError, match=r"^lab build step 'kernel' failed: "):
        labbuild.step("kernel", labbuild.check_kernel_image, FIXTURES / "smoke-ok.console.log")
    with pytest.raises(labbuild.LabBuildError,
                       match=r"^lab build step 'image' failed: FileNotFoundError: "):
        labbuild.step("image", (tmp_path / "none").read_bytes)
