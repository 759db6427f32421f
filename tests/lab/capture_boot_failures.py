"""Records real consoles of lab guests that fail on purpose, the fixtures of labvm.boot_failure.

Usage: ``python3 -m tests.lab.capture_boot_failures [--out DIR] [CASE...]`` (root, from the
repository root). Builds the
lab guest as the tests do, then boots it (scenario ``smoke``) once per case below with one
artifact swapped for a broken one, and writes what came back to
``tests/fixtures/lab-console/<case>.console.log`` (the guest's ttyS0) and, when QEMU itself said
something, ``<case>.qemu.out``. The broken artifacts are made under ``.cache/lab/broken/``.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.lab import labbuild as build
from tests.lab import labvm as vm

OUT = build.REPO / "tests" / "fixtures" / "lab-console"


def empty_gzip_initrd(g: build.Guest, work: Path) -> build.Guest:
    """What `sh -c "find . | cpio -o -H newc | gzip -1"` wrote when cpio was missing: a gzip
    stream of nothing (the shell had no pipefail, so gzip's success was the step's)."""
    img = work / "initrd.img"
    img.write_bytes(gzip.compress(b"", compresslevel=1))
    return build.Guest(release=g.release, kernel=g.kernel, initrd=img, image=g.image)


def truncated_initrd(g: build.Guest, work: Path) -> build.Guest:
    """The first half of the real initrd (a copy cut short)."""
    img = work / "initrd.img"
    data = g.initrd.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    return build.Guest(release=g.release, kernel=g.kernel, initrd=img, image=g.image)


def initrd_without_init(g: build.Guest, work: Path) -> build.Guest:
    """The real initrd's files without /init, archived as the build does."""
    tree = work / "tree"
    shutil.copytree(build.DEFAULT_CACHE / "initrd", tree, symlinks=True)
    (tree / "init").unlink()
    listing = [".", *sorted("./" + str(p.relative_to(tree)) for p in tree.rglob("*"))]
    archive = build.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree,
                        input=("\n".join(listing) + "\n").encode()).stdout
    img = work / "initrd.img"
    img.write_bytes(gzip.compress(archive, compresslevel=1, mtime=0))
    return build.Guest(release=g.release, kernel=g.kernel, initrd=img, image=g.image)


def not_a_kernel(g: build.Guest, work: Path) -> build.Guest:
    """The initrd given as the kernel (a file that is not a bzImage)."""
    return build.Guest(release=g.release, kernel=g.initrd, initrd=g.initrd, image=g.image)


def root_without_lab_init(g: build.Guest, work: Path) -> build.Guest:
    """A root disk made from an empty folder: the initrd mounts it, switch_root finds no
    /lab/init."""
    empty = work / "empty-root"
    empty.mkdir()
    img = work / "root.img"
    build.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(empty), str(img), "16M"])
    return build.Guest(release=g.release, kernel=g.kernel, initrd=g.initrd, image=img)


CASES: dict[str, Callable[[build.Guest, Path], build.Guest]] = {
    "initrd-cpio-missing": empty_gzip_initrd,
    "initrd-truncated": truncated_initrd,
    "initrd-without-init": initrd_without_init,
    "kernel-not-a-kernel": not_a_kernel,
    "root-without-lab-init": root_without_lab_init,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("cases", nargs="*", default=list(CASES), help="cases to record (all)")
    args = ap.parse_args(argv)
    good = build.build()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.cases:
        work = build.DEFAULT_CACHE / "broken" / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        res = vm.boot(CASES[name](good, work), "smoke", work / "run", timeout=300, stall_s=60)
        console = work / "run" / "console.log"
        qout = (work / "run" / "qemu.out").read_bytes()
        if console.exists():
            shutil.copyfile(console, args.out / f"{name}.console.log")
        if qout.strip():
            (args.out / f"{name}.qemu.out").write_bytes(qout)
        print(f"{name}: QEMU exited {res.returncode} after {res.seconds:.1f}s; "
              f"failure: {res.failure or '(none seen)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
