#!/usr/bin/python3
"""Lab actor: plays sysfs steps from $LAB_STEPS the way its namesake would, then stays alive.

Installed as /opt/kata/bin/containerd-shim-kata-v2 and /usr/local/bin/sriov-network-config-daemon,
so the kernel sees a process with that name (comm truncated to 15 characters) doing the writes.
"""

import os
import signal
import sys
import time

sys.path.insert(0, "/lab/guest")

import sriov


def play(steps: str) -> None:
    for step in filter(None, steps.split(";")):
        op, *args = step.split(":", 1)
        a = args[0].rsplit(":", 1) if args else []
        if op == "kata38-bind":
            sriov.kata38_bind(args[0])
        elif op == "kata38-restore":
            sriov.kata38_restore(a[0], a[1])
        elif op == "kata30-bind":
            sriov.kata30_bind(args[0])
        elif op == "kata30-restore":
            sriov.kata30_restore(a[0], a[1])
        elif op == "unbind":
            sriov.write(f"{sriov.PCI}/devices/{args[0]}/driver/unbind", args[0])
        elif op == "override":
            sriov.write(f"{sriov.PCI}/devices/{a[0]}/driver_override", a[1])
        elif op == "probe":
            sriov.write(f"{sriov.PCI}/drivers_probe", args[0])
        elif op == "sleep":
            time.sleep(float(args[0]))
        elif op == "mark":  # tell the scenario a point was reached
            with open(f"/run/lab-mark-{args[0]}", "w") as fh:
                fh.write(f"{time.monotonic_ns()}\n")
        elif op == "wait":  # wait until the scenario says go
            while not os.path.exists(f"/run/lab-go-{args[0]}"):
                time.sleep(0.02)
        else:
            raise SystemExit(f"unknown step {step!r}")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    play(os.environ.get("LAB_STEPS", ""))
    with open(f"/run/lab-actor-{os.getpid()}.done", "w") as fh:
        fh.write("done\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
