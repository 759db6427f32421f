"""bcc smoke scenario: compiles and attaches a kprobe in the guest and counts a few hits."""

from __future__ import annotations

import os
import time

import labio


def main() -> int:
    t0 = time.monotonic()
    from bcc import BPF  # Debian's python3-bpfcc

    b = BPF(text="""
BPF_ARRAY(hits, u64, 1);
int on_write(void *ctx) { int k = 0; u64 *v = hits.lookup(&k); if (v) __sync_fetch_and_add(v, 1); return 0; }
""")
    b.attach_kprobe(event=b.get_syscall_fnname("write"), fn_name="on_write")
    t1 = time.monotonic()
    fd = os.open("/dev/null", os.O_WRONLY)
    for _ in range(1000):
        os.write(fd, b"x")
    os.close(fd)
    n = b["hits"][0].value
    labio.send("bcc.txt", f"compile+attach {t1 - t0:.2f}s hits {n}\n".encode())
    return 0 if n >= 1000 else 1
