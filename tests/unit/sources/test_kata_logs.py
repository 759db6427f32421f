"""Kata log lines: logfmt and journald JSON decode to the right signature, sandbox, BDF and qemuPid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from diag.sources.kata import loglines, signatures

SID = "3acfa8826f59dcc9bd876fd171a9abd9536433429c0028b1562c9370740b258f"
# Verbatim from Kata issue #10162 (the reporter's shim log, time= omitted there).
LINE_10162 = (
    'level=error msg="qemu-system-x86_64: -device vfio-pci,host=0000:84:01.1,x-pci-vendor-id=0x15b3,'
    "x-pci-device-id=0x101e,bus=<unknown PCIePortBusPrefix: >0: Bus '<unknown PCIePortBusPrefix: >0' "
    'not found" name=containerd-shim-v2 pid=2462858 qemuPid=2462877 '
    "sandbox=3acfa8826f59dcc9bd876fd171a9abd9536433429c0028b1562c9370740b258f "
    "source=virtcontainers/hypervisor subsystem=qemu"
)


def test_issue_10162_line_is_qemu_bus_not_found() -> None:
    """The exact #10162 line: signature, VF, sandbox, qemuPid and shim pid are all extracted."""
    rec = loglines.decode_text_line(LINE_10162, "file:/var/log/kata.log")
    assert rec is not None and rec.level == "error"
    e = loglines.to_event(rec, ts_ns=1)
    assert e is not None
    assert (e.signature, e.bdf, e.sandbox_id, e.qemu_pid, e.pid) == (
        "qemu-bus-not-found", "0000:84:01.1", SID, 2462877, 2462858)
    assert dict(signatures.match(rec.message).fields)["bus"] == "<unknown PCIePortBusPrefix: >0"


def test_logfmt_quoting_and_escapes() -> None:
    """Go-quoted values keep spaces, escaped quotes, backslashes and \\n; bare values end at a space."""
    f = loglines.parse_logfmt(r'time="2024-08-14T10:00:00.123456789Z" level=info msg="a \"b\" c\\d\ne" k=v empty= x="\u00e9"')
    assert f == {"time": "2024-08-14T10:00:00.123456789Z", "level": "info", "msg": 'a "b" c\\d\ne',
                 "k": "v", "empty": "", "x": "é"}


def test_time_is_parsed_to_ns() -> None:
    """RFC3339Nano with an offset becomes epoch nanoseconds."""
    assert loglines.parse_time_ns("1970-01-01T01:00:01.5+01:00") == 1_500_000_000
    assert loglines.parse_time_ns("garbage") is None


def test_syslog_prefixed_line() -> None:
    """`journalctl -t kata` short output: the `kata[pid]:` prefix gives the shim pid."""
    line = (f'Aug 14 10:00:00 node1 kata[4242]: time="2024-08-14T10:00:00Z" level=error '
            f'msg="unable to add PhysicalEndpoint net1 because cold_plug_vfio is disabled" sandbox={SID}')
    rec = loglines.decode_text_line(line)
    e = loglines.to_event(rec, ts_ns=5)
    assert (e.signature, e.pid, e.sandbox_id, e.ts_ns) == ("coldplug-disabled-refusal", 4242, SID, 1723629600 * 10**9)


@pytest.mark.parametrize(("message", "sig", "bdf", "group"), [
    ("cold_plug_vfio= or hot_plug_vfio= port is not set for device 0000:5e:02.1 (BridgePort | RootPort | SwitchPort)",
     "port-not-set", "0000:5e:02.1", None),
    ("Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to "
     "create shim task: unable to add PhysicalEndpoint net1 because cold_plug_vfio is disabled: unknown",
     "coldplug-disabled-refusal", None, None),
    ("qemu-system-x86_64: -device vfio-pci,host=0000:01:10.0,id=vfio-1,bus=rp0: vfio 0000:01:10.0: group 42 is not viable",
     "vfio-group-not-viable", "0000:01:10.0", 42),
    ("Please ensure all devices within the iommu_group are bound to their vfio bus driver.",
     "vfio-group-not-viable-hint", None, None),
    ("readlink /sys/bus/pci/devices/0000:01:10.0/iommu_group: no such file or directory",
     "iommu-group-missing", "0000:01:10.0", None),
    ("iommu isn't set on kernel cmdline", "iommu-not-enabled", None, None),
    ("IOMMU not enabled yet.", "iommu-not-enabled", None, None),
    ('device dbdf "0000:01:10.0" dosn\'t exist in /sys/kernel/iommu_groups/7/devices.',
     "iommu-group-device-missing", "0000:01:10.0", 7),
    ("please do bind device to vfio", "vfio-group-path-missing", None, None),
    ("vfio-pci 0000:01:10.0: Relaying device request to user (#10)", "vfio-device-request", "0000:01:10.0", None),
    ("vfio-pci 0000:01:10.0: No device request channel registered, blocked until released by user",
     "vfio-device-request-blocked", "0000:01:10.0", None),
    ("Error removing endpoint  : write /sys/bus/pci/devices/0000:01:10.0/driver/unbind: device or resource busy",
     "error-removing-endpoint", "0000:01:10.0", None),
    ("Removing network after failure in createSandbox", "create-rollback", None, None),
    ("failed to detach endpoint: bind physical endpoint device from vfio to iavf", "rs-detach-endpoint-failed", None, None),
    ("Cannot start VM", "cannot-start-vm", None, None),
    ("failed to launch qemu: exit status 1", "qemu-launch-failed", None, None),
    ("Failed to connect to QEMU instance (timeout 10s): EOF", "qmp-connect-failed", None, None),
    ("QMP command failed: vfio 0000:01:10.0: group 42 used in multiple address spaces",
     "vfio-group-multiple-address-spaces", "0000:01:10.0", 42),
    ("setVfAdminMAC: skipped, falling back to in-guest MAC reconciliation", "vf-admin-mac-skipped", None, None),
    ('cannot attach VFIO network interface "net1" (BDF 0000:01:10.0): hot_plug_vfio port is not configured',
     "dan-vfio-no-hotplug-port", "0000:01:10.0", None),
    ("invalid hot-plug=root-port and cold-plug=bridge-port settings, only one of them can be set",
     "config-hot-cold-both-set", None, None),
    ("invalid vfio_port=x setting, allowed values no-port, bridge-port, root-port, switch-port",
     "config-invalid-vfio-port", None, None),
    ("only cold-plug=no-port or root-port supported on CLH", "config-clh-port-unsupported", None, None),
    ("annotation io.katacontainers.config.hypervisor.cold_plug_vfio is not enabled", "annotation-not-enabled", None, None),
    ('Invalid PCIe port "rp" specified in annotation', "annotation-invalid-pcie-port", None, None),
    ('invalid KATA_CONF_FILE "/tmp/x.toml": only shipped Kata configuration files are accepted',
     "config-kata-conf-file-rejected", None, None),
    ("Number of PCIe Root Ports exceeed allowed max of 16", "pcie-ports-exceeded", None, None),
    ("write /sys/bus/pci/drivers_probe: no such device", "sysfs-write-failed", None, None),
    ("Write vfio-pci to driver_override", "vfio-bind-override", None, None),
    ("Write mlx5_core to driver_override", "host-restore-override", None, None),
    ("Unbinding device from driver", "device-unbind", None, None),
    ("Writing bdf to drivers-probe-path", "drivers-probe", None, None),
    ("echo vfio-pci > /sys/bus/pci/devices/0000:01:10.0/driver_override", "vfio-bind-override", "0000:01:10.0", None),
    ("0000:01:10.0 is unbound from iavf", "device-unbind", "0000:01:10.0", None),
    ("echo 0000:01:10.0 > /sys/bus/pci/drivers_probe", "drivers-probe", "0000:01:10.0", None),
    ("echo iavf > /sys/bus/pci/devices/0000:01:10.0/driver_override", "host-restore-override", "0000:01:10.0", None),
    ("echo 0000:01:10.0 > /sys/bus/pci/drivers/vfio-pci/unbind", "vfio-unbind", "0000:01:10.0", None),
    ("bind 0000:01:10.0 to iavf", "host-restore-start", "0000:01:10.0", None),
    ("bdf : 0000:01:10.0 was already bound to vfio-pci", "already-on-vfio", "0000:01:10.0", None),
    ("Binding back device to host driver", "host-restore-legacy", None, None),
    ("Physical network interface found", "physical-iface-found", None, None),
    ("Device group attached", "vfio-group-attached", None, None),
])
def test_catalogue(message: str, sig: str, bdf: str | None, group: int | None) -> None:
    """Every catalogue row (kata-facts §4.3) decodes to its stable id with the values it carries."""
    m = signatures.match(message)
    assert m is not None, message
    assert (m.signature.id, m.bdf, m.iommu_group) == (sig, bdf, group)


def test_unrelated_lines_do_not_match() -> None:
    """Ordinary Kata chatter matches nothing."""
    for text in ("loaded configuration", "VM started", "Agent started in the sandbox", ""):
        assert signatures.match(text) is None


def test_fields_fill_bdf_and_group() -> None:
    """`device-bdf=` and `device-group=/dev/vfio/N` fields fill what the message lacks."""
    rec = loglines.decode_text_line('level=info msg="Write vfio-pci to driver_override" device-bdf=0000:01:10.0 '
                                f'driver-override-path=/sys/bus/pci/devices/0000:01:10.0/driver_override sandbox={SID} subsystem=device')
    e = loglines.to_event(rec, ts_ns=1)
    assert (e.signature, e.bdf, e.sandbox_id) == ("vfio-bind-override", "0000:01:10.0", SID)
    rec = loglines.decode_text_line('level=info msg="Device group attached" device-group=/dev/vfio/42 device-type=vfio-passthrough')
    assert loglines.to_event(rec, ts_ns=1).iommu_group == 42


def test_ids_are_unique_and_described() -> None:
    """Signature ids are unique kebab-case with a summary and a reference."""
    ids = [s.id for s in signatures.CATALOGUE]
    assert len(ids) == len(set(ids))
    for s in signatures.CATALOGUE:
        assert s.id == s.id.lower() and " " not in s.id and s.summary and s.ref
        assert s.severity in ("error", "warning", "info")


# ---- journald ---------------------------------------------------------------------------------


def test_journal_go_syslog_entry() -> None:
    """Go shim via syslog: SYSLOG_IDENTIFIER=kata, MESSAGE is logfmt; journald time used when none inside."""
    entry = {"__REALTIME_TIMESTAMP": "1723629600000001", "SYSLOG_IDENTIFIER": "kata", "_PID": "2462858",
             "PRIORITY": "6", "MESSAGE": LINE_10162}
    rec = loglines.decode_journal_entry(entry)
    e = loglines.to_event(rec, ts_ns=0)
    assert (e.signature, e.origin, e.sandbox_id, e.qemu_pid, e.ts_ns) == (
        "qemu-bus-not-found", "journald:kata", SID, 2462877, 1723629600000001000)


def test_journal_runtime_rs_native_fields() -> None:
    """runtime-rs (slog-journald, as its logging crate sets it up): plain MESSAGE, SOURCE is the
    sandbox id, fields lower-cased; slog's Info arrives as PRIORITY 5 (notice) and is info."""
    entry = {"SYSLOG_IDENTIFIER": "kata", "MESSAGE": "echo vfio-pci > /sys/bus/pci/devices/0000:01:10.1/driver_override",
             "NAME": "kata-runtime", "SOURCE": SID, "SUBSYSTEM": "vfio", "PID": "777", "_PID": "777",
             "VERSION": "3.9.0", "COMPONENT": "runtime", "CODE_FILE": "crates/hypervisor/src/device/vfio.rs",
             "CODE_LINE": "412", "CODE_MODULE": "hypervisor::device::vfio", "PRIORITY": "5",
             "__REALTIME_TIMESTAMP": "5"}
    e = loglines.to_event(loglines.decode_journal_entry(entry), ts_ns=0)
    assert (e.signature, e.bdf, e.sandbox_id, e.level, e.pid) == ("vfio-bind-override", "0000:01:10.1", SID, "info", 777)


@pytest.mark.parametrize(("priority", "level"), [("2", "critical"), ("3", "error"),
                                                 ("4", "warning"), ("5", "info"), ("6", "debug")])
def test_runtime_rs_priority_is_mapped_back_to_its_slog_level(priority: str, level: str) -> None:
    """slog-journald sends slog levels one step down (Info as notice, Debug as info): a
    runtime-rs entry gets its slog level back; another `kata` entry keeps syslog's names."""
    rs = {"SYSLOG_IDENTIFIER": "kata", "NAME": "kata-runtime", "MESSAGE": "x", "PRIORITY": priority}
    assert loglines.decode_journal_entry(rs).level == level
    other = {"SYSLOG_IDENTIFIER": "kata", "MESSAGE": "x", "PRIORITY": "5"}
    assert loglines.decode_journal_entry(other).level == "notice"


def test_journal_kernel_and_containerd_and_binary_message() -> None:
    """Kernel lines, containerd's unit (copied shim lines) and byte-array MESSAGEs all decode."""
    k = {"_TRANSPORT": "kernel", "MESSAGE": "vfio-pci 0000:01:10.0: Relaying device request to user (#20)"}
    assert loglines.to_event(loglines.decode_journal_entry(k), ts_ns=0).origin == "journald:kernel"
    c = {"_SYSTEMD_UNIT": "containerd.service", "MESSAGE": LINE_10162}
    assert loglines.to_event(loglines.decode_journal_entry(c), ts_ns=0).origin == "journald:containerd.service"
    b = {"SYSLOG_IDENTIFIER": "kata", "MESSAGE": list(b"Cannot start VM\xff")}
    assert loglines.to_event(loglines.decode_journal_entry(b), ts_ns=0).signature == "cannot-start-vm"


@pytest.mark.parametrize("garbage", [
    'level=error msg="unterminated', "=====", "msg=", '"\\', "\x00\x01\x02", "a" * 200000,
])
def test_garbage_lines_never_raise(garbage: str) -> None:
    """Malformed logfmt decodes to something (or None) without raising."""
    rec = loglines.decode_text_line(garbage)
    if rec is not None:
        loglines.to_event(rec, ts_ns=0)
        assert len(rec.message) <= loglines.MAX_LINE


def test_journal_garbage_entries() -> None:
    """Odd journald values (None, numbers, nested) do not raise."""
    for entry in ({}, {"MESSAGE": None}, {"MESSAGE": 5}, {"MESSAGE": [[1, 2]]}, {"MESSAGE": "x", "PRIORITY": None}):
        rec = loglines.decode_journal_entry(entry)  # type: ignore[arg-type]
        if rec is not None:
            loglines.to_event(rec, ts_ns=0)


# ---- file follower ------------------------------------------------------------------------------


def test_file_follower_partial_lines_truncation_rotation(tmp_path: Path) -> None:
    """A half-written line waits for its newline; truncation and rotation restart from the top."""
    p = tmp_path / "kata.log"
    p.write_text("old line\n")
    f = loglines.FileFollower(p)
    assert f.poll() == []  # starts at the end
    with open(p, "a") as fh:
        fh.write('level=error msg="Cannot start')
    assert f.poll() == []
    with open(p, "a") as fh:
        fh.write(' VM"\nsecond\n')
    assert f.poll() == ['level=error msg="Cannot start VM"', "second"]
    p.write_text("t\n")  # truncated (shorter)
    assert f.poll() == ["t"]
    os.rename(p, tmp_path / "kata.log.1")
    p.write_text("rotated\n")
    assert f.poll() == ["rotated"]
    p.unlink()
    assert f.poll() == []


def test_journal_follower_command_under_root(tmp_path: Path) -> None:
    """Under --root the follower reads that root's journal directory with the kata/containerd/kernel matches."""
    d = tmp_path / "var" / "log" / "journal" / "abc"
    d.mkdir(parents=True)
    (d / "system.journal").write_bytes(b"")
    cmd = loglines.JournaldFollower(tmp_path).command()
    assert cmd[:4] == ["journalctl", "-f", "-o", "json"]
    assert ["-D", str(d)] == cmd[cmd.index("-D"):cmd.index("-D") + 2]
    assert cmd[-5:] == list(loglines.JOURNAL_MATCHES)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "machine-id").write_text("abc\n")
    cmd = loglines.JournaldFollower(tmp_path).command()
    assert ["--root", str(tmp_path)] == cmd[cmd.index("--root"):cmd.index("--root") + 2]
    assert json.dumps(cmd)


def test_error_field_is_matched_when_the_message_is_generic() -> None:
    """containerd logs the runtime's error in `error=`: it is matched when `msg` is not."""
    rec = loglines.decode_text_line('time="2026-11-27T15:00:00Z" level=error msg="RunPodSandbox for \\"pod\\" failed" '
                                'error="failed to create shim task: cold_plug_vfio= or hot_plug_vfio= port is not set '
                                'for device 0000:5e:02.1 (BridgePort | RootPort | SwitchPort): unknown"')
    e = loglines.to_event(rec, ts_ns=0)
    assert (e.signature, e.bdf) == ("port-not-set", "0000:5e:02.1")
    assert e.text.startswith('RunPodSandbox for "pod" failed: failed to create shim task')


def test_same_go_line_via_syslog_and_containerd_is_reported_once() -> None:
    """A Go shim line reaches journald twice (kata identifier, containerd's log): one LogLineMatched."""
    from diag.common.paths import HostPaths
    from diag.sources.kata.source import KataWatcher

    line = f'time="2026-11-27T15:00:00.123456789Z" {LINE_10162}'
    w = KataWatcher(HostPaths.at("/nonexistent"), {"journal": False})
    out: list = []
    for origin in ("journald:kata", "journald:containerd.service"):
        w._matched(loglines.decode_text_line(line, origin), 0, out)
    w._matched(loglines.decode_text_line(line.replace(".123456789", ".123456790"), "journald:kata"), 0, out)
    assert [e.origin for e in out] == ["journald:kata", "journald:kata"] and w.dedup.dropped == 1


def test_kmsg_record() -> None:
    """A /dev/kmsg record: priority, boot-relative time made wall-clock, escaped bytes restored."""
    raw = b"4,1234,5000000,-;vfio-pci 0000:01:10.0: Relaying device request to user (#10)\n SUBSYSTEM=pci\n"
    rec = loglines.decode_kmsg(raw, boot_ns=1_000_000_000_000)
    assert (rec.level, rec.ts_ns, rec.origin) == ("warning", 1_005_000_000_000, "kmsg")
    assert loglines.to_event(rec, ts_ns=0).signature == "vfio-device-request"
    assert loglines.decode_kmsg(b"6,1,2,-;a\\x1bb\n").message == "a\x1bb"
    assert loglines.decode_kmsg(b"garbage") is None
