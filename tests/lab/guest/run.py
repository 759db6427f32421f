"""Guest scenario dispatcher: ``run.py <scenario>`` runs ``scenario_<name>.py``'s main()."""

from __future__ import annotations

import importlib
import sys
import time
import traceback

import labio


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "none"
    t0 = time.monotonic()
    try:
        mod = importlib.import_module("scenario_" + name.replace("-", "_"))
        rc = int(mod.main() or 0)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    except BaseException:
        tb = traceback.format_exc()
        print(tb, flush=True)
        labio.send("error", tb.encode())
        rc = 1
    labio.send("status", f"rc={rc} seconds={time.monotonic() - t0:.2f}\n".encode())
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
