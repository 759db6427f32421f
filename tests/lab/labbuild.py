"""Builds the QEMU SR-IOV lab guest: host QEMU, Debian 6.12 kernel, root file system, initramfs, disk image.

Every slow step is cached under ``.cache/lab/`` (a stamp file per step); the disk image is
rebuilt on every run so the guest always runs the current working tree. Mirrors are never
named here: the backports suite and debootstrap read the URIs of the machine's own apt sources.

Every command's return code is checked, and every artifact is checked before it is used (the
initrd is a gzip'd cpio archive holding /init, the kernel a bzImage, the root file system has
python3 and the lab's files, the image is ext4): a failing step stops the build with a
LabBuildError naming the step, the command and its stderr. The host packages come from
deploy/packages.txt (group ``lab``), installed by deploy/packages.sh.

Usage: ``python3 tests/lab/labbuild.py [--cache DIR] [--no-project] [--no-bcc]``; prints the
paths of the kernel, initramfs and image as ``KEY=VALUE`` lines and the time each step took.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import lzma
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
LAB = Path(__file__).resolve().parent
DEFAULT_CACHE = REPO / ".cache" / "lab"
SUITE = "bookworm"
BACKPORTS = "bookworm-backports"
BACKPORTS_SOURCE = Path("/etc/apt/sources.list.d/vfiowatch-lab-backports.sources")
PACKAGES = REPO / "deploy" / "packages.sh"  # reads deploy/packages.txt; the one installed check

# Guest packages from the base suite (debootstrap minbase + these).
GUEST_PACKAGES = ["python3", "iproute2", "kmod", "pciutils", "procps", "udev",
                  "systemd"]  # systemd: journald and journalctl (agent scenario 10)
GUEST_BCC_PACKAGES = ["python3-bpfcc", "bpfcc-tools"]
# Modules the lab needs in the root file system (dependencies are resolved from modules.dep).
ROOT_MODULES = ["igb", "igbvf", "vfio", "vfio-pci", "vfio_iommu_type1", "irqbypass"]
# Modules the hand-made initramfs loads to reach the root disk.
INITRD_MODULES = ["virtio_blk", "crc32c_generic", "ext4"]  # ext4 only soft-depends on crc32c
BUSYBOX = "/usr/bin/busybox"  # busybox-static: the initramfs's only program


class LabBuildError(RuntimeError):
    """The lab guest cannot be built: the message names the step, the command and its stderr."""


def log(msg: str) -> None:
    print(f"[lab-build] {msg}", file=sys.stderr, flush=True)


def _tail(text: bytes, lines: int = 30) -> str:
    kept = text.decode(errors="replace").rstrip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (nothing on stderr)"


def package_hint(command: str) -> str:
    """Where deploy/packages.txt lists the package that ships `command` (or says it does not)."""
    # The PATH may be the broken thing: read the list with the system's default one as well.
    env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":" + os.defpath)
    res = subprocess.run([str(PACKAGES), "table"], capture_output=True, text=True, check=False,
                         env=env)
    for line in res.stdout.splitlines():
        group, entry, *uses = line.split()
        if command in uses or any(u.rsplit("/", 1)[-1] == command for u in uses):
            return (f"it comes from the Debian package {entry.split('/')[0]} (deploy/packages.txt, "
                    f"group {group}; `deploy/packages.sh install {group}` installs it)")
    return "no package in deploy/packages.txt ships it"


def run(cmd: list[str], *, cwd: Path | None = None, input: bytes | None = None,
        env: dict[str, str] | None = None, say: bool = False
        ) -> subprocess.CompletedProcess[bytes]:
    """Runs one command, output captured; a missing command or a non-zero exit raises a
    LabBuildError naming the command and quoting its stderr (shown anyway with `say`)."""
    shown = shlex.join(cmd)
    log("$ " + shown)
    path = (env or os.environ).get("PATH", os.defpath)
    if shutil.which(cmd[0], path=path) is None:
        raise LabBuildError(f"`{shown}`: command {cmd[0]!r} not found on PATH; "
                            f"{package_hint(cmd[0])}")
    res = subprocess.run(cmd, cwd=cwd, input=input, env=env, capture_output=True, check=False)
    if res.returncode != 0:
        raise LabBuildError(f"`{shown}` exited {res.returncode}; its stderr:\n{_tail(res.stderr)}")
    if say and res.stderr.strip():
        log(res.stderr.decode(errors="replace").strip())
    return res


def out(cmd: list[str]) -> str:
    return run(cmd).stdout.decode()


# --- apt sources: find the mirror the machine is configured with --------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AptSource:
    uris: list[str]
    signed_by: str | None


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Splits a deb822 sources file into stanzas of lower-cased field -> value."""
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, last = {}, ""
            continue
        if line[0] in " \t" and last:
            cur[last] += "\n" + line.strip()
            continue
        key, _, val = line.partition(":")
        last = key.strip().lower()
        cur[last] = val.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def find_base_source(root: Path = Path("/etc/apt")) -> AptSource:
    """Returns the URIs and keyring of the configured apt source that serves the base suite."""
    for path in sorted((root / "sources.list.d").glob("*.sources")):
        for st in parse_deb822(path.read_text()):
            if st.get("enabled", "yes").lower() == "no":
                continue
            if "deb" in st.get("types", "").split() and SUITE in st.get("suites", "").split():
                return AptSource(uris=st["uris"].split(), signed_by=st.get("signed-by"))
    lists = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s", line.strip() + " ")
            if m and m.group(3) == SUITE:
                opts = m.group(1) or ""
                sb = re.search(r"signed-by=(\S+?)[\s\]]", opts)
                return AptSource(uris=[m.group(2)], signed_by=sb.group(1) if sb else None)
    raise LabBuildError(f"no apt source for suite {SUITE!r} found under {root}")


def ensure_backports_source() -> bool:
    """Writes an apt source for bookworm-backports beside the base one; True if it changed."""
    src = find_base_source()
    text = f"Types: deb\nURIs: {' '.join(src.uris)}\nSuites: {BACKPORTS}\nComponents: main\n"
    if src.signed_by:
        text += f"Signed-By: {src.signed_by}\n"
    if BACKPORTS_SOURCE.exists() and BACKPORTS_SOURCE.read_text() == text:
        return False
    BACKPORTS_SOURCE.write_text(text)
    return True


def backports_lists_present() -> bool:
    return bool(glob.glob(f"/var/lib/apt/lists/*_dists_{BACKPORTS}_*Packages*"))


def qemu_has_igb() -> bool:
    if not shutil.which("qemu-system-x86_64"):
        return False
    res = subprocess.run(
        ["qemu-system-x86_64", "-device", "help"], capture_output=True, text=True, check=False
    )
    return '"igb"' in res.stdout


def host_deps() -> None:
    """Installs deploy/packages.txt's `lab` group (QEMU >= 8 from backports, for the igb
    device, and the build tools) with deploy/packages.sh; idempotent."""
    if ensure_backports_source() or not backports_lists_present():
        run(["apt-get", "update", "-q"])
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run([str(PACKAGES), "install", "lab"], env=env, say=True)
    if not qemu_has_igb():
        log(f"the installed QEMU has no igb device (older than 8.0): installing {BACKPORTS}'s")
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-t", BACKPORTS,
             "qemu-system-x86"], env=env)
    if not qemu_has_igb():
        raise LabBuildError(f"qemu-system-x86_64 has no igb device after installing {BACKPORTS}'s "
                            "qemu-system-x86 (`qemu-system-x86_64 -device help` does not list it)")


# --- cached steps ---------------------------------------------------------------------------


_LOCK_FD: int | None = None


def lab_lock(cache_dir: Path = DEFAULT_CACHE) -> None:
    """Takes the lab's exclusive lock for the rest of this process (idempotent).

    The cache, the root file system and the disk image are shared by everyone working in this
    tree: two builds or a build during a boot would corrupt them, so whoever builds or boots
    holds .cache/lab/.lock until it exits.
    """
    global _LOCK_FD
    if _LOCK_FD is not None:
        return
    import fcntl

    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another lab run holds .cache/lab/.lock; waiting for it")
        fcntl.flock(fd, fcntl.LOCK_EX)
    _LOCK_FD = fd


class Cache:
    """The lab's cache folder: one stamp file per finished step."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def done(self, step: str, key: str = "") -> bool:
        stamp = self.root / f"{step}.done"
        return stamp.exists() and stamp.read_text() == key

    def mark(self, step: str, key: str = "") -> None:
        (self.root / f"{step}.done").write_text(key)


def backports_dependency(meta: str) -> str:
    """Returns the versioned package a backports meta-package (e.g. linux-image-amd64) pulls in."""
    ver = ""
    for line in out(["apt-cache", "madison", meta]).splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) >= 3 and BACKPORTS in cols[2]:
            ver = cols[1]
            break
    if not ver:
        raise LabBuildError(f"{meta} not found in {BACKPORTS}; is the suite configured?")
    for line in out(["apt-cache", "show", f"{meta}={ver}"]).splitlines():
        if line.startswith("Depends:"):
            return line.split(":", 1)[1].split(",")[0].split("(")[0].strip()
    raise LabBuildError(f"{meta}={ver} has no Depends")


def fetch_debs(cache: Cache, names: list[str]) -> list[Path]:
    debs = cache.root / "debs"
    debs.mkdir(exist_ok=True)
    found: list[Path] = []
    for name in names:
        have = sorted(debs.glob(f"{name}_*.deb"))
        if not have:
            run(["apt-get", "download", "-q", f"{name}/{BACKPORTS}"], cwd=debs)
            have = sorted(debs.glob(f"{name}_*.deb"))
        if not have:
            raise LabBuildError(f"apt-get download {name}/{BACKPORTS} left no {name}_*.deb in {debs}")
        found.append(have[-1])
    return found


def kernel_release(kdir: Path) -> str:
    """The release of the one kernel unpacked in kdir (from its boot/vmlinuz-<release>)."""
    found = sorted(kdir.glob("boot/vmlinuz-*"))
    if len(found) != 1:
        raise LabBuildError(f"expected one boot/vmlinuz-* in {kdir}, found {len(found)}")
    return found[0].name.removeprefix("vmlinuz-")


def kernel(cache: Cache) -> tuple[str, Path]:
    """Downloads and unpacks (never installs) Debian's 6.12 kernel; returns (release, folder)."""
    kdir = cache.root / "kernel"
    if cache.done("kernel", _stamp_of(cache, "kernel")) and kdir.is_dir():
        try:
            rel = kernel_release(kdir)
            check_kernel_image(kdir / "boot" / f"vmlinuz-{rel}")
            return rel, kdir
        except LabBuildError as exc:
            log(f"the cached kernel is not usable ({exc}); unpacking it again")
    pkg = backports_dependency("linux-image-amd64")
    (deb,) = fetch_debs(cache, [pkg])
    shutil.rmtree(kdir, ignore_errors=True)
    run(["dpkg-deb", "-x", str(deb), str(kdir)])
    rel = kernel_release(kdir)
    check_kernel_image(kdir / "boot" / f"vmlinuz-{rel}")
    run(["depmod", "-b", str(kdir), rel])  # the .deb ships no modules.dep
    cache.mark("kernel", pkg)
    return rel, kdir


def _stamp_of(cache: Cache, step: str) -> str:
    stamp = cache.root / f"{step}.done"
    return stamp.read_text() if stamp.exists() else "\0missing"


def headers(cache: Cache, release: str) -> Path:
    """Unpacks the kernel headers matching the guest kernel (for bcc) aside; returns the folder."""
    hdir = cache.root / "headers"
    if cache.done("headers", release):
        return hdir
    img = f"linux-headers-{release}"
    deps = out(["apt-cache", "show", f"{img}/{BACKPORTS}"])
    names = [img]
    for line in deps.splitlines():
        if line.startswith("Depends:"):
            for dep in line.split(":", 1)[1].split(","):
                dname = dep.split("(")[0].strip()
                if dname.startswith(("linux-headers-", "linux-kbuild-")):
                    names.append(dname)
            break
    shutil.rmtree(hdir, ignore_errors=True)
    for deb in fetch_debs(cache, names):
        run(["dpkg-deb", "-x", str(deb), str(hdir)])
    cache.mark("headers", release)
    return hdir


def module_closure(kdir: Path, release: str, wanted: list[str]) -> list[str]:
    """Returns the module files (relative to lib/modules/<rel>) for wanted, dependencies first."""
    mroot = kdir / "lib" / "modules" / release
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (mroot / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        base = Path(path).name.split(".ko")[0]
        by_name[base.replace("-", "_")] = path
    builtin = set()
    bi = mroot / "modules.builtin"
    if bi.exists():
        builtin = {Path(x).name.split(".ko")[0].replace("-", "_") for x in bi.read_text().split()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            raise LabBuildError(f"module {name} neither built in nor in {mroot}/modules.dep")
    return order


def rootfs(cache: Cache, release: str, kdir: Path, with_bcc: bool) -> Path:
    """debootstraps the guest root file system once (minbase + tools), trims it, adds modules."""
    root = cache.root / "rootfs"
    pkgs = GUEST_PACKAGES + (GUEST_BCC_PACKAGES if with_bcc else [])
    key = f"{release} {' '.join(pkgs)}"
    if cache.done("rootfs", key):
        try:
            check_rootfs(root, release, with_bcc=with_bcc)
            return root
        except LabBuildError as exc:
            log(f"the cached root file system is not usable ({exc}); building it again")
            (cache.root / "debootstrap.done").unlink(missing_ok=True)
    if not cache.done("debootstrap", " ".join(pkgs)):
        debootstrap(cache, root, pkgs)
        cache.mark("debootstrap", " ".join(pkgs))
    add_modules_and_headers(cache, root, release, kdir, with_bcc)
    check_rootfs(root, release, with_bcc=with_bcc)
    cache.mark("rootfs", key)
    return root


def unmount_under(root: Path) -> None:
    """Unmounts whatever an interrupted debootstrap left mounted inside the root (e.g. proc)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1] for line in fh if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        run(["umount", "-l", point])  # left mounted, the rmtree that follows would go into it


def debootstrap(cache: Cache, root: Path, pkgs: list[str]) -> None:
    """Runs debootstrap (minbase + pkgs) against the configured mirror and trims the result."""
    src = find_base_source()
    unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)
    debcache = cache.root / "debootstrap-debs"
    debcache.mkdir(exist_ok=True)
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(pkgs)}",
           f"--cache-dir={debcache}"]
    if src.signed_by:
        cmd.append(f"--keyring={src.signed_by}")
    run([*cmd, SUITE, str(root), src.uris[0]])
    for junk in ["usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
                 "var/lib/apt/lists", "var/cache/apt"]:
        shutil.rmtree(root / junk, ignore_errors=True)


def add_modules_and_headers(cache: Cache, root: Path, release: str, kdir: Path,
                            with_bcc: bool) -> None:
    """Copies the lab's modules (and for bcc the matching headers) into the root file system."""
    # Modules: the merged /usr means lib -> usr/lib; copy into usr/lib, never over lib.
    mdst = root / "usr" / "lib" / "modules" / release
    shutil.rmtree(mdst, ignore_errors=True)
    msrc = kdir / "lib" / "modules" / release
    for rel in module_closure(kdir, release, ROOT_MODULES):
        dst = mdst / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(msrc / rel, dst)
    for f in msrc.glob("modules.*"):
        if f.name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            shutil.copy2(f, mdst / f.name)
    run(["depmod", "-b", str(root), release])
    if with_bcc:
        hdr = headers(cache, release)
        # headers unpack into usr/src and lib/modules/<rel>/build; copy both into usr/.
        shutil.copytree(hdr / "usr", root / "usr", symlinks=True, dirs_exist_ok=True)
        hb = hdr / "lib" / "modules" / release
        if hb.exists():
            shutil.copytree(hb, mdst, symlinks=True, dirs_exist_ok=True)
    (root / "etc" / "hostname").write_text("vfiowatch-lab\n")


INITRD_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.load); do insmod "/mods/$m" || echo "initrd: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
mkdir -p /newroot
mount -t ext4 /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; echo o > /proc/sysrq-trigger; }
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /lab/init
"""


# Bumped when the recipe changes, so that a cached initrd made the old way is rebuilt.
INITRD_FORMAT = "2: cpio fed by Python, gzip in Python, checked"


def initramfs(cache: Cache, release: str, kdir: Path) -> Path:
    """Builds a small busybox initramfs that loads virtio_blk + ext4 and switch_roots to /lab/init."""
    img = cache.root / "initrd.img"
    recipe = INITRD_INIT + repr(INITRD_MODULES) + INITRD_FORMAT
    key = release + " " + hashlib.sha256(recipe.encode()).hexdigest()[:16]
    if cache.done("initrd", key) and img.exists():
        try:
            check_initrd(img)
            return img
        except LabBuildError as exc:
            log(f"the cached initrd is not usable ({exc}); building it again")
    work = cache.root / "initrd"
    shutil.rmtree(work, ignore_errors=True)
    for d in ["bin", "proc", "sys", "dev", "mods", "newroot"]:
        (work / d).mkdir(parents=True)
    if not Path(BUSYBOX).is_file():
        raise LabBuildError(f"{BUSYBOX} is missing; {package_hint(BUSYBOX)}")
    shutil.copy2(BUSYBOX, work / "bin" / "busybox")
    msrc = kdir / "lib" / "modules" / release
    names = []
    for rel in module_closure(kdir, release, INITRD_MODULES):
        name = Path(rel).name
        data = (msrc / rel).read_bytes()
        if name.endswith(".xz"):  # Debian compresses its modules with xz; busybox insmod cannot
            data = lzma.decompress(data)
            name = name.removesuffix(".xz")
        elif not name.endswith(".ko"):
            raise LabBuildError(f"{msrc / rel}: a module compression the lab does not unpack")
        (work / "mods" / name).write_bytes(data)
        names.append(name)
    (work / "modules.load").write_text("\n".join(names) + "\n")
    (work / "init").write_text(INITRD_INIT)
    (work / "init").chmod(0o755)
    # `find . | cpio | gzip` without the shell: the names listed here, cpio's exit status
    # checked, the gzip done in Python; then the result is checked before it replaces the old.
    listing = [".", *sorted("./" + str(p.relative_to(work)) for p in work.rglob("*"))]
    archive = run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=work,
                  input=("\n".join(listing) + "\n").encode()).stdout
    tmp = img.with_name(img.name + ".new")
    tmp.write_bytes(gzip.compress(archive, compresslevel=1, mtime=0))
    check_initrd(tmp)
    tmp.replace(img)
    cache.mark("initrd", key)
    return img


# --- artifact checks: each built file is checked before it is used ---------------------------


def cpio_members(archive: bytes) -> dict[str, int]:
    """Name -> mode of each member of a newc ("070701") cpio archive, up to its TRAILER!!!;
    raises ValueError when the archive is malformed or ends early."""
    members: dict[str, int] = {}
    off = 0
    while True:
        head = archive[off:off + 110]
        if len(head) < 110:
            raise ValueError(f"it ends at byte {len(archive)} without the TRAILER!!! member")
        if head[:6] not in (b"070701", b"070702"):
            raise ValueError(f"no newc header at byte {off} (found {head[:6]!r})")
        try:
            fields = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise ValueError(f"a corrupt header at byte {off}") from None
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_end = off + 110 + namesize
        if namesize == 0 or name_end > len(archive):
            raise ValueError(f"it ends inside the header at byte {off}")
        name = archive[off + 110:name_end - 1].decode(errors="replace")
        off = (name_end + 3) & ~3
        if name == "TRAILER!!!":
            return members
        if off + size > len(archive):
            raise ValueError(f"it ends inside {name!r} ({size} bytes from byte {off})")
        off = (off + size + 3) & ~3
        members[name.removeprefix("./")] = mode


def check_initrd(img: Path) -> dict[str, int]:
    """Checks that img is an initrd the kernel can unpack and start: one complete gzip stream of
    a newc cpio archive holding an executable /init and the busybox it runs. Returns the
    archive's members (name -> mode)."""
    try:
        data = img.read_bytes()
    except OSError as exc:
        raise LabBuildError(f"initrd {img}: {exc}") from exc
    what = f"initrd {img} ({len(data)} bytes)"
    try:
        archive = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise LabBuildError(f"{what} is not a complete gzip stream: {exc}") from exc
    if not archive:
        raise LabBuildError(f"{what} is a gzip stream of nothing: no cpio archive in it")
    try:
        members = cpio_members(archive)
    except ValueError as exc:
        raise LabBuildError(f"{what} does not hold a whole newc cpio archive: {exc}") from exc
    mode = members.get("init")
    if mode is None:
        raise LabBuildError(f"{what}: its cpio archive has no /init ({len(members)} members)")
    if (mode & 0o170000) != 0o100000 or not mode & 0o111:
        raise LabBuildError(f"{what}: its /init is not an executable file (mode {mode:o})")
    if "bin/busybox" not in members:
        raise LabBuildError(f"{what}: its cpio archive has no /bin/busybox, which /init runs in")
    return members


def check_kernel_image(path: Path) -> None:
    """Checks that path is an x86 bzImage: the boot protocol's header magic "HdrS" at 0x202."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(0x206)
        size = path.stat().st_size
    except OSError as exc:
        raise LabBuildError(f"kernel image {path}: {exc}") from exc
    if head[0x202:0x206] != b"HdrS":
        raise LabBuildError(f"{path} ({size} bytes) is not a bzImage kernel: no 'HdrS' boot "
                            f"header magic at offset 0x202 (found {head[0x202:0x206]!r})")


def in_root(root: Path, rel: str) -> Path | None:
    """The file rel names inside root, following symlinks as the guest would (an absolute
    target is taken inside root, never on the host); None when it does not exist."""
    cur = root
    parts = [p for p in rel.split("/") if p]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / part
        if nxt.is_symlink():
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(nxt)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                cur = root
            continue
        if not nxt.exists() and not nxt.is_symlink():
            return None
        cur = nxt
    return cur


def check_rootfs(root: Path, release: str, *, with_bcc: bool) -> None:
    """Checks that the root file system is a guest's: python3, a shell, the lab's modules with
    their index, and for bcc its Python package and the kernel headers."""
    need = {"usr/bin/python3": "python3 runs every scenario",
            "bin/sh": "/lab/init is a shell script",
            f"usr/lib/modules/{release}/modules.dep": "depmod's index of the lab's modules"}
    if with_bcc:
        need["usr/lib/python3/dist-packages/bcc/__init__.py"] = "bcc (python3-bpfcc)"
        need[f"usr/lib/modules/{release}/build/Makefile"] = "the kernel headers bcc compiles with"
    missing = [f"/{rel} ({why})" for rel, why in need.items() if in_root(root, rel) is None]
    if missing:
        raise LabBuildError(f"the guest root file system {root} has no " + "; no ".join(missing))
    module_closure(root, release, ROOT_MODULES)  # every lab module is in the guest's index


def check_guest_files(root: Path, with_project: bool) -> None:
    """Checks that the lab's own files are in the root file system: /lab/init, the scenario
    runner and every scenario, the actor binaries, and the project with its launcher."""
    need = ["lab/init", "lab/guest/run.py", "lab/guest/labio.py"]
    need += [f"lab/guest/{p.name}" for p in sorted((LAB / "guest").glob("*.py"))]
    need += [f"lab/bin/{p.stem}" for p in sorted((LAB / "guest" / "c").glob("*.c"))]
    if with_project:
        need += ["usr/local/bin/vfiowatch", f"{GUEST_SITE}/diag/__init__.py",
                 f"{GUEST_SITE}/diag/cli.py"]
    missing = [f"/{rel}" for rel in need if in_root(root, rel) is None]
    if missing:
        raise LabBuildError(f"the guest root file system {root} lacks the lab's " + ", ".join(missing))
    for rel in ["lab/init", *(r for r in need if r.startswith("lab/bin/"))]:
        path = in_root(root, rel)
        if path is None or not os.access(path, os.X_OK):
            raise LabBuildError(f"/{rel} in {root} is not executable")


def check_disk_image(img: Path) -> None:
    """Checks that img is an ext4 file system (superblock magic 0xEF53 at byte 1080)."""
    try:
        with open(img, "rb") as fh:
            fh.seek(1024 + 0x38)
            magic = fh.read(2)
    except OSError as exc:
        raise LabBuildError(f"disk image {img}: {exc}") from exc
    if len(magic) < 2 or struct.unpack("<H", magic)[0] != 0xEF53:
        raise LabBuildError(f"disk image {img} is not ext4 (no superblock magic 0xEF53 at 1080)")


GUEST_SITE = "opt/vfiowatch/site"
LAUNCHER = """#!/usr/bin/python3
# vfiowatch launcher for the lab guest (the project is installed under /opt/vfiowatch/site).
import sys
sys.path.insert(0, "/opt/vfiowatch/site")
from diag.cli import main
sys.exit(main())
"""


def project_dependencies() -> list[str]:
    """The project's runtime dependencies, as pyproject.toml lists them."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(data.get("project", {}).get("dependencies", []))


def pip() -> list[str]:
    venv = REPO / ".venv" / "bin" / "python"
    return [str(venv) if venv.exists() else sys.executable, "-m", "pip"]


def python_deps(cache: Cache) -> Path:
    """pip-installs the project's dependencies once into a cached folder (guest is Python 3.11)."""
    deps = project_dependencies()
    key = hashlib.sha256(repr(deps).encode()).hexdigest()[:16]
    target = cache.root / "pydeps"
    if cache.done("pydeps", key) and target.is_dir():
        return target
    shutil.rmtree(target, ignore_errors=True)
    if deps:
        run([*pip(), "install", "-q", "--no-compile", "--target", str(target),
             "--python-version", "3.11", "--only-binary=:all:", "--platform",
             "manylinux2014_x86_64", "--implementation", "cp", *deps])
    target.mkdir(exist_ok=True)
    cache.mark("pydeps", key)
    return target


def install_guest_files(root: Path, with_project: bool, cache: Cache) -> None:
    """Copies the lab's guest scripts, and the project from the working tree, into the rootfs."""
    lab = root / "lab"
    shutil.rmtree(lab, ignore_errors=True)
    shutil.copytree(LAB / "guest", lab / "guest",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (lab / "init").symlink_to("guest/init.sh")
    (lab / "guest" / "init.sh").chmod(0o755)
    # The actors are real executables (exe, argv[0] and comm as the real processes have them).
    (lab / "bin").mkdir()
    for src in sorted((LAB / "guest" / "c").glob("*.c")):
        run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
             str(lab / "bin" / src.stem), str(src)])
    # py-spy (a static binary, in the project's test extras) profiles the agent in the bench.
    spy = Path(sys.executable).parent / "py-spy"
    if spy.exists():
        shutil.copy2(spy.resolve(), lab / "bin" / "py-spy")
    site = root / GUEST_SITE
    shutil.rmtree(site.parent, ignore_errors=True)
    launcher = root / "usr" / "local" / "bin" / "vfiowatch"
    launcher.unlink(missing_ok=True)
    if not with_project or not (REPO / "pyproject.toml").exists():
        return
    site.mkdir(parents=True)
    shutil.copytree(python_deps(cache), site, dirs_exist_ok=True, symlinks=True)
    # A real install of the working tree (a wheel built by its own build backend), so the
    # guest runs what a user would get, probes included.
    run([*pip(), "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
         str(REPO)])
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts carry host shebangs
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)


def disk_image(cache: Cache, root: Path, size: str) -> Path:
    """Makes the ext4 root disk straight from the folder (no loop mount), every run."""
    img = cache.root / "root.img"
    img.unlink(missing_ok=True)
    unmount_under(root)
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(img), size])
    check_disk_image(img)
    return img


@dataclass(frozen=True, slots=True, kw_only=True)
class Guest:
    release: str
    kernel: Path
    initrd: Path
    image: Path


T = TypeVar("T")


def step(name: str, fn: Callable[..., T], *args: object, times: dict[str, float] | None = None
         ) -> T:
    """Runs one build step: any failure in it becomes a LabBuildError that names the step."""
    t0 = time.monotonic()
    try:
        return fn(*args)
    except LabBuildError as exc:
        raise LabBuildError(f"lab build step {name!r} failed: {exc}") from exc
    except Exception as exc:  # an unforeseen failure still says which step it stopped
        raise LabBuildError(f"lab build step {name!r} failed: {type(exc).__name__}: {exc}"
                            ) from exc
    finally:
        if times is not None:
            times[name] = time.monotonic() - t0


def build(cache_dir: Path = DEFAULT_CACHE, *, with_project: bool = True,
          with_bcc: bool = True, size: str = "") -> Guest:
    """Runs every step (cached ones are quick, their artifacts checked again) and returns the
    paths to boot; raises LabBuildError naming the step that failed.

    Takes the lab lock (held until the process exits, so the boots that follow are covered).
    """
    lab_lock(cache_dir)
    cache = Cache(cache_dir)
    t: dict[str, float] = {}
    step("host", host_deps, times=t)
    release, kdir = step("kernel", kernel, cache, times=t)
    root = step("rootfs", rootfs, cache, release, kdir, with_bcc, times=t)
    initrd = step("initrd", initramfs, cache, release, kdir, times=t)
    step("guest-files", install_guest_files, root, with_project, cache, times=t)
    step("guest-files", check_guest_files, root, with_project)
    image = step("image", disk_image, cache, root, size or ("1200M" if with_bcc else "400M"),
                 times=t)
    log("step times: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    return Guest(release=release, kernel=kdir / "boot" / f"vmlinuz-{release}", initrd=initrd,
                 image=image)


def last_built(cache_dir: Path = DEFAULT_CACHE) -> Guest:
    """The guest as last built (to boot it again without building), its artifacts checked."""
    lab_lock(cache_dir)
    kdir = cache_dir / "kernel"
    release = step("kernel", kernel_release, kdir)
    guest = Guest(release=release, kernel=kdir / "boot" / f"vmlinuz-{release}",
                  initrd=cache_dir / "initrd.img", image=cache_dir / "root.img")
    step("kernel", check_kernel_image, guest.kernel)
    step("initrd", check_initrd, guest.initrd)
    step("image", check_disk_image, guest.image)
    return guest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--no-project", action="store_true")
    ap.add_argument("--no-bcc", action="store_true", help="a root file system without bcc")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        g = build(args.cache, with_project=not args.no_project, with_bcc=not args.no_bcc)
    except LabBuildError as exc:
        log(str(exc))
        return 1
    print(f"RELEASE={g.release}\nKERNEL={g.kernel}\nINITRD={g.initrd}\nIMAGE={g.image}")
    log(f"build took {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
