"""Image benchmark: the agent image's size and the time `make image` takes, warm and cold.

Beside the image: its base alone (Debian with python3-bpfcc, which any bcc-based agent image
carries). The warm build (base cached, pip's cache warm) is split into its steps: the wheels
built on the host and the `podman build` of the image's own layers. The cold build starts from
an empty work directory and makes the base again with mmdebstrap, and says whether the result
is the same image (reproducible).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from diag import __version__
from tests.bench.benchtable import table
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("require_root")

IMAGE = f"localhost/vfiowatch:{__version__}"
BUILD = REPO / "deploy" / "build-image.sh"
WARM_RUNS = int(os.environ.get("VFIOWATCH_BENCH_IMAGE_RUNS", "3"))
SUMMARY = re.compile(r"make image: (?P<image>\S+) \((?P<mb>\d+) MB\) from (?P<base>.*) in "
                     r"(?P<total>[\d.]+) s \(wheels (?P<wheels>[\d.]+) s, base (?P<basetime>[\d.]+)"
                     r" s, build (?P<build>[\d.]+) s\)")


def _build(**env: str) -> tuple[float, dict[str, str]]:
    t0 = time.monotonic()
    res = subprocess.run([str(BUILD)], cwd=REPO, capture_output=True, text=True, timeout=3600,
                         env={**os.environ, **env})
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-4000:]
    m = SUMMARY.search(res.stdout)
    assert m, res.stdout
    return took, m.groupdict()


def _inspect(image: str, fmt: str) -> str:
    return subprocess.run(["podman", "image", "inspect", "--format", fmt, image], check=True,
                          capture_output=True, text=True).stdout.strip()


def _mb(image: str) -> float:
    return int(_inspect(image, "{{.Size}}")) / 1e6


def _gzipped_mb(image: str, tmp: Path) -> float:
    """About what a registry stores and a node pulls: the saved image, gzipped."""
    archive = tmp / "image.tar"
    subprocess.run(["podman", "save", "-q", "--format", "docker-archive", "-o", str(archive),
                    image], check=True, capture_output=True)
    with archive.open("rb") as src:
        n = len(subprocess.run(["gzip", "-c"], stdin=src, capture_output=True, check=True).stdout)
    archive.unlink()
    return n / 1e6


def test_image_size_and_build_time(tmp_path: Path) -> None:
    """Prints the image's size beside its base's, and make image's time warm and cold."""
    _build()  # whatever state the cache was in, it is warm afterwards
    warm = [_build() for _ in range(WARM_RUNS)]
    image_id = _inspect(IMAGE, "{{.Id}}")
    base = _inspect(IMAGE, '{{index .Labels "org.opencontainers.image.base.name"}}')
    gz = _gzipped_mb(IMAGE, tmp_path)

    cold_tag = f"localhost/vfiowatch-bench-{uuid.uuid4().hex[:8]}:cold"
    try:
        cold, parts = _build(IMAGE=cold_tag, IMAGE_CACHE=str(tmp_path / "cache"),
                             IMAGE_REBUILD_BASE="1")
        same = _inspect(cold_tag, "{{.Id}}") == image_id
    finally:
        subprocess.run(["podman", "rmi", cold_tag], capture_output=True)

    total = statistics.median(t for t, _ in warm)
    step = statistics.median(float(p["build"]) for _, p in warm)
    wheels = statistics.median(float(p["wheels"]) for _, p in warm)
    rows = [
        ("image size", f"{_mb(IMAGE):.0f} MB ({gz:.0f} MB gzipped)",
         f"its base alone {_mb(base):.0f} MB", f"{_mb(IMAGE) / _mb(base):.2f}x"),
        (f"make image, warm cache (median of {WARM_RUNS})",
         f"{total:.1f} s (wheels {wheels:.1f} s)", f"podman build step {step:.1f} s",
         f"{total / step:.1f}x"),
        ("make image, cold (empty work directory, mmdebstrap base made again)",
         f"{cold:.0f} s (base {float(parts['basetime']):.0f} s)", "", ""),
        ("cold rebuild gives the same image id", "yes" if same else "NO", "", ""),
    ]
    print("\n" + table(f"Agent image {IMAGE} (base {base})",
                       ("what", "vfiowatch", "beside", "ratio"), rows))
