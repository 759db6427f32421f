"""Benchmark helper: where a command spends its time, by py-spy (printed beside a missed target).

`profile(argv)` runs the command under `py-spy record --format raw` (sampling, all threads) and
returns the functions with the most samples, by own time and by time under them; `table()` of
benchtable prints them. py-spy is in the test extras; without it the profile says so.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def profile(argv: list[str], *, under: str = "", top: int = 12, rate: int = 1000,
            env: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """[(function, % own samples, % samples under it)] of `argv`, the `top` by own samples;
    only stacks through a frame whose name contains `under` when given."""
    spy = _py_spy()
    if spy is None:
        return [("py-spy is not installed (pip install -e '.[test]')", "", "")]
    with tempfile.TemporaryDirectory(prefix="vfiowatch-prof-") as tmp:
        out = os.path.join(tmp, "raw.txt")
        res = subprocess.run([spy, "record", "-r", str(rate), "-f", "raw", "-o", out, "--", *argv],
                             capture_output=True, text=True, timeout=1800, env=env)
        if res.returncode != 0 or not os.path.exists(out):
            return [(f"py-spy failed: {res.stderr.strip()[-200:]}", "", "")]
        own: collections.Counter[str] = collections.Counter()
        total: collections.Counter[str] = collections.Counter()
        n = 0
        for line in Path(out).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
            if under:
                at = next((i for i, f in enumerate(frames) if under in f), None)
                if at is None:
                    continue
                frames = frames[at:]
            k = int(count)
            n += k
            own[frames[-1]] += k
            for f in set(frames):
                total[f] += k
    if not n:
        return [("no samples", "", "")]
    return [(f.replace(str(Path.cwd()) + "/", ""), f"{c / n * 100:.1f}", f"{total[f] / n * 100:.1f}")
            for f, c in own.most_common(top)]
