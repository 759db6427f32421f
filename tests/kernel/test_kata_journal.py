"""Kata lines in real journal files (written by systemd-journal-remote) reach LogLineMatched via `journalctl -f`.

The host journal is not used: a --root holds `etc/machine-id` and
`var/log/journal/<machine-id>/remote.journal`, which systemd-journal-remote appends to while the
kata source's JournaldFollower follows it, as on a node where the agent reads the host's journal
through /host.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources.kata.source import KataWatcher

REMOTE = "/lib/systemd/systemd-journal-remote"
MID = "0123456789abcdef0123456789abcdef"
SID = "3acfa8826f59dcc9bd876fd171a9abd9536433429c0028b1562c9370740b258f"
LINE_10162 = (
    'level=error msg="qemu-system-x86_64: -device vfio-pci,host=0000:84:01.1,x-pci-vendor-id=0x15b3,'
    "x-pci-device-id=0x101e,bus=<unknown PCIePortBusPrefix: >0: Bus '<unknown PCIePortBusPrefix: >0' "
    f'not found" name=containerd-shim-v2 pid=2462858 qemuPid=2462877 sandbox={SID} '
    "source=virtcontainers/hypervisor subsystem=qemu"
)


def export(entries: list[dict[str, str]], start_us: int) -> bytes:
    """Journal export format (systemd.journal-fields), one entry per dict."""
    out = []
    for i, fields in enumerate(entries):
        out.append(f"__REALTIME_TIMESTAMP={start_us + i}\n__MONOTONIC_TIMESTAMP={1000 + i}\n_BOOT_ID={MID}\n")
        out.extend(f"{k}={v}\n" for k, v in fields.items())
        out.append("\n")
    return "".join(out).encode()


def write(root: Path, entries: list[dict[str, str]], start_us: int) -> None:
    target = root / "var/log/journal" / MID / "remote.journal"
    subprocess.run([REMOTE, "-o", str(target), "-"], input=export(entries, start_us), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def collect(w: KataWatcher, n: int, seconds: float = 10.0) -> list[ev.Event]:
    """The watcher's matched lines and Kata write lines, until `n` of them came (or time ran out)."""
    out: list[ev.Event] = []
    end = time.monotonic() + seconds
    while len(out) < n and time.monotonic() < end:
        out += [e for e in w.step_logs(time.time_ns(), timeout=0.2)
                if isinstance(e, (ev.LogLineMatched, ev.SysfsWriteObserved))]
    return out


def test_journal_follow_go_rs_kernel_and_containerd(tmp_path: Path) -> None:
    """New entries (Go logfmt via syslog, runtime-rs fields, kernel, containerd unit) decode to signatures;
    old ones are skipped; a journalctl that exits is started again."""
    if not (Path(REMOTE).exists() and shutil.which("journalctl")):
        pytest.skip("needs systemd-journal-remote and journalctl (deploy/packages.txt)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/machine-id").write_text(MID + "\n")
    (root / "var/log/journal" / MID).mkdir(parents=True)
    now_us = time.time_ns() // 1000
    write(root, [{"SYSLOG_IDENTIFIER": "kata", "MESSAGE": 'level=error msg="Cannot start VM"'}], now_us - 10_000_000)

    w = KataWatcher(HostPaths.at(root), {"journal": True})
    w.start_journal()
    try:
        assert w.journal is not None, w.journal_reason
        time.sleep(0.5)
        write(root, [
            {"SYSLOG_IDENTIFIER": "kata", "_PID": "2462858", "PRIORITY": "3", "MESSAGE": LINE_10162},
            {"SYSLOG_IDENTIFIER": "kata", "MESSAGE": "echo vfio-pci > /sys/bus/pci/devices/0000:01:10.1/driver_override",
             "SOURCE": SID, "NAME": "kata-runtime", "SUBSYSTEM": "vfio", "PRIORITY": "6"},
            {"_TRANSPORT": "kernel", "MESSAGE": "vfio-pci 0000:01:10.0: Relaying device request to user (#10)"},
            {"_SYSTEMD_UNIT": "containerd.service",
             "MESSAGE": 'time="2026-11-27T15:00:00Z" level=error msg="RunPodSandbox failed" error="failed to create '
                        'containerd task: failed to create shim task: unable to add PhysicalEndpoint net1 because '
                        'cold_plug_vfio is disabled: unknown"'},
            {"SYSLOG_IDENTIFIER": "sshd", "MESSAGE": "Cannot start VM"},  # not matched by the follower
        ], now_us)
        new = collect(w, 4)
        got = [e for e in new if isinstance(e, ev.LogLineMatched)]
        writes = [e for e in new if isinstance(e, ev.SysfsWriteObserved)]

        # journalctl dies (we started it; ended by its pid): the watcher starts it again.
        assert w.journal is not None and w.journal.proc is not None
        w.journal.proc.terminate()
        end = time.monotonic() + 5
        while w.journal is not None and time.monotonic() < end:
            w.step_logs(time.time_ns(), timeout=0.1)
        assert w.journal is None and w.journal_restarts == 1
        w.step(time.time_ns(), time.monotonic() + w.journal_retry_s + 1)
        assert w.journal is not None
        time.sleep(0.5)
        write(root, [{"SYSLOG_IDENTIFIER": "kata", "MESSAGE": 'level=error msg="Cannot start VM"'}], now_us + 100)
        again = collect(w, 1)
        assert [e.signature for e in again if isinstance(e, ev.LogLineMatched)] == ["cannot-start-vm"]
    finally:
        w.close()
    assert [(e.signature, e.origin) for e in got] == [
        ("qemu-bus-not-found", "journald:kata"),
        ("vfio-device-request", "journald:kernel"),
        ("coldplug-disabled-refusal", "journald:containerd.service"),
    ]
    assert got[2].text.startswith("RunPodSandbox failed: failed to create containerd task")
    assert (got[0].sandbox_id, got[0].qemu_pid, got[0].bdf) == (SID, 2462877, "0000:84:01.1")
    # runtime-rs's `echo vfio-pci > .../driver_override` is the write it announces (issue 17).
    (wr,) = writes
    assert (wr.mode, wr.control, wr.value, wr.bdf) == ("kata-log", "driver_override", "vfio-pci",
                                                      "0000:01:10.1")
    assert (wr.actor.sandbox_id, wr.actor.kata_runtime) == (SID, "rs")
