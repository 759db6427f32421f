"""Helpers for live kernel tests and benchmarks: a C uevent storm writer, netns/veth, raw counters.

Everything here only makes synthetic uevents (`echo "bind <uuid>" > .../uevent`, safe:
host-facts.md) and network namespaces/veth pairs it names with a unique prefix and removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

STORM_C = r"""
/* uevent_storm: write "<action> <uuid>" to a device's sysfs uevent file N times, as fast as
 * the kernel takes it; each write makes the kernel broadcast one synthetic uevent. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s <uevent-file> <count> <text>\n", argv[0]); return 2; }
    int fd = open(argv[1], O_WRONLY | O_CLOEXEC);
    if (fd < 0) { perror("open"); return 1; }
    long n = atol(argv[2]); size_t len = strlen(argv[3]); long ok = 0;
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) if (pwrite(fd, argv[3], len, 0) == (ssize_t)len) ok++;
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%ld %.6f\n", ok, s);
    return ok == n ? 0 : 1;
}
"""

RTNL_COUNTER = r"""
import os, signal, socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
s.bind((0, 1))
counts = {16: 0, 17: 0}
enobufs = 0
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
s.settimeout(0.1)
print("ready", flush=True)
while not stop:
    try:
        data = s.recv(65536)
    except socket.timeout:
        continue
    except OSError as e:
        enobufs += 1
        continue
    off = 0
    while off + 16 <= len(data):
        ln, typ = struct.unpack_from("=IH", data, off)
        if typ in counts:
            counts[typ] += 1
        off += (ln + 3) & ~3
print(counts[16], counts[17], enobufs, flush=True)
"""


def sh(cmd: str, *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, shell=True, check=check, text=True, capture_output=True, timeout=timeout)


def build_storm_writer(tmp: Path) -> Path:
    """Compile the storm writer into `tmp` (gcc is in the project's apt packages)."""
    if shutil.which("gcc") is None:
        import pytest

        pytest.skip("gcc is needed for the uevent storm writer (deploy/setup-host.sh installs it)")
    src = tmp / "uevent_storm.c"
    exe = tmp / "uevent_storm"
    src.write_text(STORM_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def storm_device() -> str:
    """A PCI device of this machine that has a driver (synthetic uevents carry its DRIVER)."""
    base = Path("/sys/bus/pci/devices")
    for d in sorted(base.iterdir()):
        if (d / "driver").exists():
            return d.name
    return sorted(base.iterdir())[0].name


def storm(exe: Path, bdf: str, count: int, text: str) -> tuple[int, float]:
    """Run the writer: (uevents written, seconds)."""
    out = subprocess.run([str(exe), f"/sys/bus/pci/devices/{bdf}/uevent", str(count), text],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1])


def new_uuid() -> str:
    return str(uuid.uuid4())


def prefix() -> str:
    """A unique short prefix for netns/veth names (ifnames have 15 characters at most)."""
    return "vw" + uuid.uuid4().hex[:5]


@contextlib.contextmanager
def cleanup_netns(pfx: str) -> Iterator[None]:
    """On exit (even on failure), delete every netns and host link whose name starts with pfx."""
    try:
        yield
    finally:
        for line in sh("ip -o link show", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(pfx):
                sh(f"ip link del {name}", check=False)
        for line in sh("ip netns list", check=False).stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(pfx):
                sh(f"ip netns del {name}", check=False)


class RawCounter:
    """A plain NETLINK_ROUTE socket in a namespace counting RTM_NEWLINK/DELLINK (a subprocess
    under `ip netns exec`, so it shares no code with the agent)."""

    def __init__(self, netns: str | None) -> None:
        cmd = [sys.executable, "-c", RTNL_COUNTER]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> tuple[int, int, int]:
        """(new, del, enobufs)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        a, b, c = (int(x) for x in out.split())
        return a, b, c

    def close(self) -> None:
        """Make sure the counter is gone (after a failure, stop() was never reached)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def cpu_seconds(pid: int | None = None) -> float:
    """user+system CPU seconds of a process (default: this one), from /proc."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
