"""Compression bombs and oversized inputs cost postmortem a bounded time and memory, and the
report names the file and the limit (each gz here inflates 1,000 or 300 times to 64 MiB)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from diag.importers import (
    _INFLATE_CHUNK,
    GZ_MAX_RATIO,
    GZ_RATIO_FROM,
    FileStats,
    _gunzip,
    iter_lines,
    read_whole,
    sniff,
)
from tests.conftest import vfiowatch_bin
from tests.unit.postmortem.vw_bombs import (
    KATA_HEAD,
    KATA_UNIT,
    STATE_HEAD,
    UDEV_HEAD,
    UDEV_UNIT,
    gzip_bomb,
)

SIZE = 64 << 20
BOMBS = {
    "newlines": (b"", b"\n"),
    "udevadm": (UDEV_HEAD, UDEV_UNIT),
    "kataconfig": (KATA_HEAD, KATA_UNIT),
    "katastate": (STATE_HEAD, b" " * 79 + b"\n"),
}
MAX_RSS_KB = 200_000
"""The bound asserted: measured 23-53 MB for 512 MiB bombs (was 628 MB, and over 150 s)."""
MAX_SECONDS = 60
_LAUNCH = ("import os, subprocess, sys\n"
           "p = subprocess.Popen(sys.argv[1:], stderr=subprocess.DEVNULL)\n"
           "_, status, usage = os.wait4(p.pid, 0)\n"
           "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, file=sys.stderr)\n")
"""Runs the command and prints its exit status and peak RSS (KiB)."""


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bombs")
    for name, (head, unit) in BOMBS.items():
        (d / name).mkdir()
        gzip_bomb(d / name / f"{name}.gz", head, unit, SIZE)
    return d


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_postmortem_of_a_bomb_is_bounded_and_names_file_and_limit(bombs: Path, name: str) -> None:
    """`vfiowatch postmortem` of a bomb: exit 2 within the time bound, peak RSS under 200 MB,
    and the input is named with the ratio limit it broke (or, all newlines, as unrecognised)."""
    out = bombs / f"{name}.json"
    t0 = time.monotonic()
    with open(out, "wb") as fh:
        # Measured through a small launcher: a child forked straight from this (large) test
        # process would count the test process's pages in its peak RSS.
        got = subprocess.run([sys.executable, "-c", _LAUNCH, vfiowatch_bin(), "postmortem",
                              "--format", "json", str(bombs / name)], stdout=fh,
                             stderr=subprocess.PIPE, timeout=MAX_SECONDS * 2, check=False)
    took = time.monotonic() - t0
    rc, maxrss = (int(x) for x in got.stderr.split()[-2:])
    assert rc == 2 and took < MAX_SECONDS and maxrss < MAX_RSS_KB, (rc, took, maxrss)
    (inp,) = json.loads(out.read_text())["inputs"]
    assert inp["path"] == str(bombs / name / f"{name}.gz")
    if name == "newlines":
        assert inp["format"] == "unrecognised"
    else:
        assert inp["truncated"] and any(
            n.startswith(f"a compression bomb: it inflates more than {GZ_MAX_RATIO} times (the "
                         "limit past 8 MiB)") for n in inp["notes"]), inp


def test_sniffing_a_bomb_inflates_a_bounded_amount(bombs: Path) -> None:
    """Sniffing decompresses in 256 KiB steps and stops at its head: the newline bomb's sniff
    allocates under 16 MB at its peak (one unbounded decompress call made 64 MB)."""
    tracemalloc.start()
    try:
        sniff(str(bombs / "newlines" / "newlines.gz"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


def test_each_decompress_step_is_bounded(bombs: Path) -> None:
    """No chunk the gzip reader yields exceeds 256 KiB, however much one input chunk inflates,
    and the reader stops once past 8 MiB at over 100 times (64 KiB of input inflated whole)."""
    st = FileStats("x")
    with open(bombs / "newlines" / "newlines.gz", "rb") as raw:
        sizes = [len(c) for c in _gunzip(raw, st)]
    assert max(sizes) <= _INFLATE_CHUNK and sum(sizes) <= GZ_RATIO_FROM + _INFLATE_CHUNK
    assert st.truncated and st.bytes_read <= 1 << 17


def test_a_plain_input_is_cut_at_the_input_limit(tmp_path: Path) -> None:
    """Past `limit` bytes a plain file stops, marked cut, the limit named."""
    f = tmp_path / "big.log"
    f.write_bytes(b"x" * 99 + b"\n" * 1 + (b"y" * 99 + b"\n") * 30_000)
    st = FileStats(str(f))
    n = sum(1 for _ in iter_lines(str(f), st, limit=1 << 20))
    assert st.truncated and st.notes == ["read only its first 1 MiB (the limit for one input)"]
    assert n <= (1 << 20) // 100


def test_a_whole_file_over_its_limit_is_refused_with_the_limit() -> None:
    """read_whole gives None and an error naming the limit and the kind of file."""
    st = FileStats("x")
    assert read_whole([b"a" * 1000 + b"\n"] * 10, st, "a snapshot", limit=4096) is None
    assert st.error == "larger than 4096 bytes (decompressed), the limit for a snapshot: not read"
    assert read_whole([b"a\n"] * 3, FileStats("y"), "a snapshot", limit=4096) == b"a\na\na\n"
