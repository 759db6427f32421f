"""Command line for the lab: ``python3 -m tests.lab.labctl SCENARIO`` (from the repository root) builds, boots and saves payloads."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from tests.lab import labbuild as build
from tests.lab import labvm as vm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--out", type=Path, default=None, help="where payloads go")

    ap.add_argument("--no-build", action="store_true", help="boot the image as it is")
    ap.add_argument("--append", default="", help="extra kernel command line (lab.only=1,2 ...)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before the VM is killed")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        guest = build.last_built() if args.no_build else build.build()
    except build.LabBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    t1 = time.monotonic()
    out = args.out or build.DEFAULT_CACHE / "runs" / args.scenario
    shutil.rmtree(out, ignore_errors=True)
    res = vm.boot(guest, args.scenario, out, extra_append=args.append, timeout=args.timeout)
    out.mkdir(parents=True, exist_ok=True)
    for name, body in res.payloads.items():
        (out / name).write_bytes(body)
    print(res.explain() if res.failure else res.console[-3000:])
    print(f"build {t1 - t0:.1f}s, boot+scenario {res.seconds:.1f}s, status {res.status.strip()!r}, "
          f"payloads {sorted(res.payloads)} in {out}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
