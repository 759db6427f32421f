"""Builds the QEMU SR-IOV lab guest: host QEMU, Debian 6.12 kernel, root file system, initramfs, disk image.

Every slow step is cached under ``.cache/lab/`` (a stamp file per step); the disk image is
rebuilt on every run so the guest always runs the current working tree. Mirrors are never
named here: the backports suite and debootstrap read the URIs of the machine's own apt sources.

Usage: ``python3 tests/lab/labbuild.py [--cache DIR] [--no-project] [--no-bcc]``; prints the
paths of the kernel, initramfs and image as ``KEY=VALUE`` lines and the time each step took.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = Path(__file__).resolve().parent
DEFAULT_CACHE = REPO / ".cache" / "lab"
SUITE = "bookworm"
BACKPORTS = "bookworm-backports"
BACKPORTS_SOURCE = Path("/etc/apt/sources.list.d/vfiowatch-lab-backports.sources")

# Guest packages from the base suite (debootstrap minbase + these).
GUEST_PACKAGES = ["python3", "iproute2", "kmod", "pciutils", "procps", "udev",
                  "systemd"]  # systemd: journald and journalctl (agent scenario 10)
GUEST_BCC_PACKAGES = ["python3-bpfcc", "bpfcc-tools"]
# Modules the lab needs in the root file system (dependencies are resolved from modules.dep).
ROOT_MODULES = ["igb", "igbvf", "vfio", "vfio-pci", "vfio_iommu_type1", "irqbypass"]
# Modules the hand-made initramfs loads to reach the root disk.
INITRD_MODULES = ["virtio_blk", "crc32c_generic", "ext4"]  # ext4 only soft-depends on crc32c
HOST_PACKAGES = ["debootstrap", "busybox-static", "e2fsprogs", "cpio", "xz-utils",
                 "gcc", "libc6-dev"]  # gcc + libc6-dev: the guest's static actor binaries


def log(msg: str) -> None:
    print(f"[lab-build] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, text=True, **kw)  # type: ignore[call-overload]


def out(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, text=True, capture_output=True).stdout


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
    raise SystemExit(f"no apt source for suite {SUITE!r} found under {root}")


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
    """Installs QEMU (>= 8, for the igb device) from backports and the build tools; idempotent."""
    changed = ensure_backports_source()
    missing = [p for p in HOST_PACKAGES if not _dpkg_installed(p)]
    if changed or not backports_lists_present() or (missing and not qemu_has_igb()):
        run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if missing:
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env,
            stdout=subprocess.DEVNULL)
    if not qemu_has_igb():
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-t", BACKPORTS,
             "qemu-system-x86"], env=env, stdout=subprocess.DEVNULL)
    if not qemu_has_igb():
        raise SystemExit("qemu-system-x86_64 has no igb device after install")


def _dpkg_installed(pkg: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", pkg],
                         capture_output=True, text=True, check=False)
    return res.stdout.endswith("installed")




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
        raise SystemExit(f"{meta} not found in {BACKPORTS}; is the suite configured?")
    for line in out(["apt-cache", "show", f"{meta}={ver}"]).splitlines():
        if line.startswith("Depends:"):
            return line.split(":", 1)[1].split(",")[0].split("(")[0].strip()
    raise SystemExit(f"{meta}={ver} has no Depends")


def fetch_debs(cache: Cache, names: list[str]) -> list[Path]:
    debs = cache.root / "debs"
    debs.mkdir(exist_ok=True)
    found: list[Path] = []
    for name in names:
        have = sorted(debs.glob(f"{name}_*.deb"))
        if not have:
            run(["apt-get", "download", "-q", f"{name}/{BACKPORTS}"], cwd=debs,
                stdout=subprocess.DEVNULL)
            have = sorted(debs.glob(f"{name}_*.deb"))
        found.append(have[-1])
    return found


def kernel(cache: Cache) -> tuple[str, Path]:
    """Downloads and unpacks (never installs) Debian's 6.12 kernel; returns (release, folder)."""
    kdir = cache.root / "kernel"
    if not cache.done("kernel", _stamp_of(cache, "kernel")) or not kdir.is_dir():
        pkg = backports_dependency("linux-image-amd64")
        (deb,) = fetch_debs(cache, [pkg])
        shutil.rmtree(kdir, ignore_errors=True)
        run(["dpkg-deb", "-x", str(deb), str(kdir)])
        rel = next(kdir.glob("boot/vmlinuz-*")).name.removeprefix("vmlinuz-")
        run(["depmod", "-b", str(kdir), rel])  # the .deb ships no modules.dep
        cache.mark("kernel", pkg)
    rel = next(kdir.glob("boot/vmlinuz-*")).name.removeprefix("vmlinuz-")
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
            raise SystemExit(f"module {name} neither built in nor in modules.dep")
    return order


def rootfs(cache: Cache, release: str, kdir: Path, with_bcc: bool) -> Path:
    """debootstraps the guest root file system once (minbase + tools), trims it, adds modules."""
    root = cache.root / "rootfs"
    pkgs = GUEST_PACKAGES + (GUEST_BCC_PACKAGES if with_bcc else [])
    key = f"{release} {' '.join(pkgs)}"
    if cache.done("rootfs", key):
        return root
    if not cache.done("debootstrap", " ".join(pkgs)):
        debootstrap(cache, root, pkgs)
        cache.mark("debootstrap", " ".join(pkgs))
    add_modules_and_headers(cache, root, release, kdir, with_bcc)
    cache.mark("rootfs", key)
    return root


def unmount_under(root: Path) -> None:
    """Unmounts whatever an interrupted debootstrap left mounted inside the root (e.g. proc)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1] for line in fh if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


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
    run([*cmd, SUITE, str(root), src.uris[0]], stdout=subprocess.DEVNULL)
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


def initramfs(cache: Cache, release: str, kdir: Path) -> Path:
    """Builds a small busybox initramfs that loads virtio_blk + ext4 and switch_roots to /lab/init."""
    img = cache.root / "initrd.img"
    key = release + " " + hashlib.sha256((INITRD_INIT + repr(INITRD_MODULES)).encode()).hexdigest()[:16]
    if cache.done("initrd", key) and img.exists():
        return img
    work = cache.root / "initrd"
    shutil.rmtree(work, ignore_errors=True)
    for d in ["bin", "proc", "sys", "dev", "mods", "newroot"]:
        (work / d).mkdir(parents=True)
    shutil.copy2("/usr/bin/busybox", work / "bin" / "busybox")
    msrc = kdir / "lib" / "modules" / release
    names = []
    for rel in module_closure(kdir, release, INITRD_MODULES):
        name = Path(rel).name
        data = (msrc / rel).read_bytes()
        if name.endswith(".xz"):
            data = subprocess.run(["xz", "-dc"], input=data, capture_output=True,
                                  check=True).stdout
            name = name.removesuffix(".xz")
        elif name.endswith(".zst"):
            data = subprocess.run(["zstd", "-dc"], input=data, capture_output=True,
                                  check=True).stdout
            name = name.removesuffix(".zst")
        (work / "mods" / name).write_bytes(data)
        names.append(name)
    (work / "modules.load").write_text("\n".join(names) + "\n")
    (work / "init").write_text(INITRD_INIT)
    (work / "init").chmod(0o755)
    data = subprocess.run(["sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1"],
                          cwd=work, capture_output=True, check=True).stdout
    img.write_bytes(data)
    cache.mark("initrd", key)
    return img


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
         str(REPO)], stdout=subprocess.DEVNULL)
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
    return img


@dataclass(frozen=True, slots=True, kw_only=True)
class Guest:
    release: str
    kernel: Path
    initrd: Path
    image: Path


def build(cache_dir: Path = DEFAULT_CACHE, *, with_project: bool = True,
          with_bcc: bool = True, size: str = "") -> Guest:
    """Runs every step (cached ones are quick) and returns the paths to boot.

    Takes the lab lock (held until the process exits, so the boots that follow are covered).
    """
    lab_lock(cache_dir)
    cache = Cache(cache_dir)
    t: dict[str, float] = {}

    def step(name: str, fn, *a, **kw):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        res = fn(*a, **kw)
        t[name] = time.monotonic() - t0
        return res

    step("host", host_deps)
    release, kdir = step("kernel", kernel, cache)
    root = step("rootfs", rootfs, cache, release, kdir, with_bcc)
    initrd = step("initrd", initramfs, cache, release, kdir)
    step("guest-files", install_guest_files, root, with_project, cache)
    image = step("image", disk_image, cache, root, size or ("1200M" if with_bcc else "400M"))
    log("step times: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    return Guest(release=release, kernel=kdir / "boot" / f"vmlinuz-{release}", initrd=initrd,
                 image=image)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--no-project", action="store_true")
    ap.add_argument("--no-bcc", action="store_true", help="a root file system without bcc")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    g = build(args.cache, with_project=not args.no_project, with_bcc=not args.no_bcc)
    print(f"RELEASE={g.release}\nKERNEL={g.kernel}\nINITRD={g.initrd}\nIMAGE={g.image}")
    log(f"build took {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
