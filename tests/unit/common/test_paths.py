"""HostPaths' confined walk: links resolved as in a chroot, escapes refused and noted, `/` untouched."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from diag.common.paths import MAX_LINKS, HostPaths, OutsideRoot


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """`root` with the links a real host has, and `outside/secret` beside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("SECRET")
    (root / "run" / "netns").mkdir(parents=True)
    (root / "run" / "state").write_text("inside\n")
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")  # Debian's absolute /var/run
    (root / "etc").mkdir()
    (root / "etc" / "rel").symlink_to("../run/state")
    (root / "sys" / "devices" / "d0").mkdir(parents=True)
    (root / "sys" / "devices" / "d0" / "vendor").write_text("0x8086\n")
    (root / "sys" / "bus").mkdir()
    (root / "sys" / "bus" / "d0").symlink_to("../devices/d0")
    return root, outside


def _refused(paths: HostPaths, host: str) -> OutsideRoot:
    with pytest.raises(OutsideRoot) as info:
        paths.read_bytes(host)
    assert info.value.errno == errno.EXDEV
    return info.value


def test_links_inside_the_root_resolve_like_the_host_would(tree: tuple[Path, Path]) -> None:
    """A relative link, an absolute one outside /sys and /proc (taken under the root), and a
    sysfs device link all read the file the copied host would."""
    root, _ = tree
    paths = HostPaths.at(root)
    assert paths.read_text("/var/run/state") == "inside\n"
    assert paths.read_text("/etc/rel") == "inside\n"
    assert paths.read_text("/sys/bus/d0/vendor") == "0x8086\n"
    assert paths.resolve("/var/run/state") == "/run/state"
    assert paths.resolve("/sys/bus/d0") == "/sys/devices/d0"
    assert paths.real("/var/run/state") == str(root / "run" / "state")
    assert paths.listdir("/var/run") == paths.listdir("/run")
    assert paths.refusals.all() == []


def test_an_absolute_link_outside_is_taken_under_the_root(tree: tuple[Path, Path]) -> None:
    """`/etc/abs -> <outside>/secret` means the copied host's own path: not found here, and
    the message says through which link."""
    root, outside = tree
    (root / "etc" / "abs").symlink_to(outside / "secret")
    paths = HostPaths.at(root)
    with pytest.raises(FileNotFoundError) as info:
        paths.read_text("/etc/abs")
    assert "taken under --root" in str(info.value)
    (root / outside.relative_to("/")).mkdir(parents=True)
    (root / outside.relative_to("/") / "secret").write_text("the copy's own")
    assert paths.read_text("/etc/abs") == "the copy's own"


@pytest.mark.parametrize("where", ["/etc", "/run/netns", "/sys/devices/d0"])
def test_a_dotdot_link_that_climbs_out_is_refused_at_every_depth(tree: tuple[Path, Path], where: str) -> None:
    """A `../` link that climbs above the root is refused (never clamped, never followed), and
    the refusal names the link and its target."""
    root, outside = tree
    link = root / where.lstrip("/") / "up"
    link.symlink_to(os.path.relpath(outside / "secret", link.parent))
    paths = HostPaths.at(root)
    exc = _refused(paths, f"{where}/up")
    assert f"{where}/up -> ../" in str(exc) and "climbs above --root" in str(exc)
    assert paths.refusals.all() == [exc.why]


def test_a_link_that_climbs_out_and_back_in_stays_legal(tree: tuple[Path, Path]) -> None:
    """`../` links are judged on the physical walk: one that goes up and back down stays in."""
    root, _ = tree
    (root / "etc" / "back").symlink_to("../etc/../run/state")
    assert HostPaths.at(root).read_text("/etc/back") == "inside\n"


@pytest.mark.parametrize("top", ["sys", "proc"])
def test_an_absolute_link_in_sys_or_proc_is_refused(tree: tuple[Path, Path], top: str) -> None:
    """The kernel makes only relative links in /sys and /proc: an absolute one is refused, even
    when it would point back inside (a hostile tree's /sys/bus/pci/devices/X -> /sys/...)."""
    root, _ = tree
    (root / top / "abs").parent.mkdir(parents=True, exist_ok=True)
    (root / top / "abs").symlink_to("/run/state")
    exc = _refused(HostPaths.at(root), f"/{top}/abs")
    assert f"an absolute link in /{top}" in str(exc)


def test_a_dotdot_in_the_path_itself_cannot_climb(tree: tuple[Path, Path]) -> None:
    """A caller's `..` (from a process's path, say) never leaves the root either."""
    root, _ = tree
    _refused(HostPaths.at(root), "/run/../../outside/secret")


def test_a_link_loop_is_eloop_after_max_links(tree: tuple[Path, Path]) -> None:
    """Forty links at most, like the kernel."""
    root, _ = tree
    (root / "etc" / "loop").symlink_to("loop")
    with pytest.raises(OSError) as info:
        HostPaths.at(root).read_bytes("/etc/loop")
    assert info.value.errno == errno.ELOOP and MAX_LINKS == 40


def test_a_fifo_is_refused_without_blocking(tree: tuple[Path, Path]) -> None:
    """A FIFO where a file is expected is refused (EINVAL), never opened for a blocking read."""
    root, _ = tree
    os.mkfifo(root / "etc" / "fifo")
    done: list[int] = []

    def read() -> None:
        try:
            HostPaths.at(root).read_bytes("/etc/fifo")
        except OSError as exc:
            done.append(exc.errno or 0)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    assert done == [errno.EINVAL]


def test_a_device_node_in_the_tree_is_never_read(tree: tuple[Path, Path]) -> None:
    """A character device copied into the tree (tar as root keeps them) is refused: it would
    read the agent's own host."""
    root, _ = tree
    try:
        os.mknod(root / "etc" / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    with pytest.raises(OSError) as info:
        HostPaths.at(root).read_bytes("/etc/zero")
    assert info.value.errno == errno.EINVAL


def test_refusals_are_noted_once_per_path_and_taken_once(tree: tuple[Path, Path]) -> None:
    """A consumer reports each refused path once; the full list stays for summaries."""
    root, outside = tree
    (root / "etc" / "up").symlink_to(os.path.relpath(outside / "secret", root / "etc"))
    paths = HostPaths.at(root)
    for _ in range(3):
        assert not paths.exists("/etc/up")
    assert len(paths.refusals.take()) == 1 and paths.refusals.take() == []
    assert len(paths.refusals.all()) == 1 and paths.refusals.total == 3


def test_readlink_reads_a_link_and_never_follows_it(tree: tuple[Path, Path]) -> None:
    """Magic links are names: readlink returns the text, whatever it points at."""
    root, outside = tree
    (root / "proc" / "7").mkdir(parents=True)
    (root / "proc" / "7" / "exe").symlink_to(outside / "secret")
    assert HostPaths.at(root).readlink("/proc/7/exe") == str(outside / "secret")


def test_opendir_reads_entries_relative_and_resolves_entry_links_confined(tree: tuple[Path, Path]) -> None:
    """An open directory reads its files with one openat; an entry that is a link goes
    through the confined walk (refused when it leads outside)."""
    root, outside = tree
    d0 = root / "sys" / "devices" / "d0"
    (d0 / "ok").symlink_to("vendor")
    (d0 / "bad").symlink_to(os.path.relpath(outside / "secret", d0))
    paths = HostPaths.at(root)
    with paths.opendir("/sys/bus/d0") as d:
        assert d.host_path == "/sys/devices/d0"
        assert d.read_text("vendor") == d.read_text("ok") == "0x8086\n"
        with pytest.raises(OutsideRoot):
            d.read_bytes("bad")
        with pytest.raises(OutsideRoot):
            d.link_name("bad")
        assert d.link_name("ok") == "vendor"


def test_glob_matches_inside_the_root_only(tree: tuple[Path, Path]) -> None:
    """containerd's import globs expand inside the root, hidden names only when asked."""
    root, _ = tree
    for name in ("a.toml", "b.toml", ".hidden.toml", "c.txt"):
        (root / "etc" / name).write_text("")
    paths = HostPaths.at(root)
    assert paths.glob("/etc/*.toml") == ["/etc/a.toml", "/etc/b.toml"]
    assert paths.glob("/var/run/st*") == ["/var/run/state"]


def test_root_slash_is_the_plain_system_call(tmp_path: Path) -> None:
    """With root `/` nothing is walked: absolute links and `..` behave as the system's own."""
    paths = HostPaths()
    assert not paths.confined
    (tmp_path / "f").write_text("x")
    (tmp_path / "abs").symlink_to(tmp_path / "f")
    rel = os.path.relpath(tmp_path / "f", "/sys")
    assert paths.read_text(str(tmp_path / "abs")) == "x"
    assert paths.read_text(f"/sys/{rel}") == "x"
    assert paths.readlink("/proc/self/exe") == os.readlink("/proc/self/exe")
    assert paths.refusals.all() == []
