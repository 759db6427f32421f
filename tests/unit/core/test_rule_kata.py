"""Rules kata-known-error and kata-config-invalid: Kata's own lines and settings, tied to episodes."""

from __future__ import annotations

import datetime as dt

import pytest

from diag import events as ev
from diag.core.thresholds import NS
from diag.importers.logfmt import parse_logfmt_lines
from tests.unit.core.corelab import (
    KATA_SHIM,
    SID,
    VF,
    inventory,
    kata_config,
    of_rule,
    phase_events,
    run,
    sandbox,
    start_ns,
    tracker_for,
)

T0 = start_ns()
KNOWN = "kata-known-error"
INVALID = "kata-config-invalid"
BUS_LINE = ("qemu-system-x86_64: -device vfio-pci,host=0000:01:10.0,x-pci-vendor-id=0x8086,"
            "x-pci-device-id=0x10ca,bus=<unknown PCIePortBusPrefix: >0: "
            "Bus '<unknown PCIePortBusPrefix: >0' not found")


def kata_line(ts_ns: int, msg: str, level: str = "error") -> ev.Event:
    """A Kata Go shim logfmt line (as in #10162), decoded by the Kata log decoder."""
    t = dt.datetime.fromtimestamp(ts_ns / NS, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    line = (f'time="{t}" level={level} msg="{msg}" name=containerd-shim-v2 pid=4242 '
            f"qemuPid=5150 sandbox={SID} source=virtcontainers/hypervisor subsystem=qemu")
    [e] = list(parse_logfmt_lines([line], origin="journald:kata"))
    return e


def _bound(cold: str = "no-port") -> list[ev.Event]:
    inv = inventory(T0)
    tr = tracker_for(inv)
    return [inv, kata_config(T0, cold_plug=cold),
            *phase_events("kata38-bind-vfio", tr, actor=KATA_SHIM)]


def test_qemu_bus_line_is_critical_and_joins_the_bind_episode() -> None:
    """The #10162 QEMU line opens a critical finding whose evidence is the whole move, and the
    line joins the vfio-bind-coldplug-disabled finding's story (updated, not a new finding)."""
    events = _bound()
    events.append(kata_line(events[-1].ts_ns + 300_000_000, BUS_LINE))
    _, out = run(events)
    [f] = of_rule(out, KNOWN)
    assert f.severity is ev.Severity.CRITICAL and f.bdf == VF and f.sandbox_id == SID
    assert dict(f.labels)["signature"] == "qemu-bus-not-found"
    assert [e.kind for e in f.evidence][-1] == "log_line_matched"
    assert any(e.kind == "device_unbound" for e in f.evidence)
    [cold] = of_rule(out, "vfio-bind-coldplug-disabled")
    assert cold.status == "updated" and cold.evidence[-1].kind == "log_line_matched"


def test_repeats_update_and_restore_resolves() -> None:
    """A repeated line updates the count; the VF's return to igbvf resolves it."""
    events = _bound()
    t = events[-1].ts_ns
    events += [kata_line(t + 100, BUS_LINE), kata_line(t + 200, BUS_LINE)]
    events += [ev.DeviceBound(ts_ns=t + 300, source="uevent", bdf=VF, driver="igbvf")]
    _, out = run(events)
    [f] = of_rule(out, KNOWN)
    assert dict(f.labels)["count"] == "2"
    assert f.status == "resolved" and "igbvf" in f.resolved_reason


def test_line_without_device_links_by_sandbox_and_expires() -> None:
    """`Cannot start VM` names only the sandbox: linked to its VF; resolves after the TTL."""
    events = [*_bound(), sandbox(T0)]
    t = events[-1].ts_ns + 1000
    events.append(kata_line(t, "Cannot start VM"))
    _, out = run(events, until_ns=t + 601 * NS)
    [f] = of_rule(out, KNOWN)
    assert f.bdf == VF and f.pod == "web-0"
    assert f.status == "resolved" and "not repeated" in f.resolved_reason


def test_containerds_failure_names_the_pod_and_ends_with_its_sandbox() -> None:
    """containerd's `RunPodSandbox for &PodSandboxMetadata{Name:web-0,...,Namespace:shop,...}
    failed` carries no sandbox id: the pod it names is the sandbox's, so the finding says which
    pod and resolves when that sandbox goes (it stayed open, about `the host`)."""
    events = [*_bound(), sandbox(T0)]
    t = events[-1].ts_ns + 1000
    events.append(ev.LogLineMatched(
        ts_ns=t, source="kata", signature="qmp-connect-failed", origin="file:/var/log/syslog",
        level="error", pid=174,
        text="RunPodSandbox for &PodSandboxMetadata{Name:web-0,Uid:6b0c1d2e,Namespace:shop,"
             "Attempt:0,} failed, error: failed to create containerd task: failed to create "
             "shim task: Failed to connect to QEMU instance (timeout 10s): EOF: unknown"))
    events.append(ev.SandboxStopped(ts_ns=t + NS, source="kata", sandbox_id=SID))
    _, out = run(events)
    [f] = of_rule(out, KNOWN)
    assert (f.sandbox_id, f.pod_namespace, f.pod) == (SID, "shop", "web-0")
    assert f.status == "resolved" and "is gone" in f.resolved_reason


def test_a_pod_named_in_another_namespace_is_not_taken() -> None:
    """Same pod name, other namespace: no sandbox is claimed for the line."""
    events = [*_bound(), sandbox(T0)]
    t = events[-1].ts_ns + 1000
    events.append(ev.LogLineMatched(
        ts_ns=t, source="kata", signature="qmp-connect-failed", level="error",
        text="RunPodSandbox for &PodSandboxMetadata{Name:web-0,Uid:1,Namespace:other,Attempt:0,}"
             " failed, error: x"))
    _, out = run(events)
    [f] = of_rule(out, KNOWN)
    assert f.sandbox_id is None and f.pod is None


def test_info_lines_never_open() -> None:
    """Kata's bind step lines (info) only join the episode as evidence."""
    events = _bound()
    events.append(kata_line(events[-1].ts_ns + 10, "Write vfio-pci to driver_override", "info"))
    _, out = run(events)
    assert of_rule(out, KNOWN) == []


# ---- kata-config-invalid ---------------------------------------------------------------------


def test_both_plug_settings_set_uses_katas_swapped_text_and_resolves_on_fix() -> None:
    """cold+hot both set: Kata's own (label-swapped) text; a fixed reload resolves it."""
    bad = kata_config(T0, cold_plug="root-port", hot_plug_vfio="bridge-port")
    good = ev.KataConfigLoaded(ts_ns=T0 + NS, source="kata", changed=True,
                               config=kata_config(T0, cold_plug="root-port").config)
    _, out = run([bad, good])
    [f] = of_rule(out, INVALID)
    assert "invalid hot-plug=root-port and cold-plug=bridge-port settings" in f.summary
    assert f.status == "resolved" and "without the error" in f.resolved_reason


@pytest.mark.parametrize(("kw", "text"), [
    ({"cold_plug": "nic-port"}, "invalid vfio_port=nic-port setting"),
    ({"cold_plug": "bridge-port", "hypervisor": "clh"}, "only cold-plug=no-port or root-port supported on CLH"),
    ({"cold_plug": "root-port", "pcie_root_port": 17}, "Number of PCIe Root Ports exceeed allowed max of 16"),
])
def test_core_check_matches_katas_rules(kw: dict[str, object], text: str) -> None:
    """The core checks every loaded configuration with Kata's rules and texts."""
    e = kata_config(T0, **kw)  # type: ignore[arg-type]
    _, out = run([e])
    [f] = of_rule(out, INVALID)
    assert text in f.summary and f.severity is ev.Severity.ERROR


@pytest.mark.parametrize("cold", ["no-port", "root-port", "bridge-port", "switch-port"])
def test_valid_configurations_raise_nothing(cold: str) -> None:
    """Valid settings (and Kata's assumed defaults) raise nothing."""
    _, out = run([kata_config(T0, cold_plug=cold),
                  ev.KataConfigLoaded(ts_ns=T0, source="kata",
                                      config=ev.KataConfig(handler="default", assumed=True))])
    assert of_rule(out, INVALID) == []


def test_refused_annotation_resolves_when_its_sandbox_goes() -> None:
    """A refused pod annotation (source event) is open until its sandbox is gone."""
    inv = ev.KataConfigInvalid(
        ts_ns=T0, source="kata", path="/run/containerd/io.containerd.runtime.v2.task/k8s.io/x/config.json",
        message="annotation io.katacontainers.config.hypervisor.cold_plug_vfio is not enabled",
        key="io.katacontainers.config.hypervisor.cold_plug_vfio", sandbox_id=SID)
    _, out = run([inv, ev.SandboxStopped(ts_ns=T0 + NS, source="kata", sandbox_id=SID)])
    [f] = of_rule(out, INVALID)
    assert "is not enabled" in f.summary and f.sandbox_id == SID
    assert f.status == "resolved" and "is gone" in f.resolved_reason


@pytest.mark.parametrize("level", ["error", "critical", "crit"])
def test_an_uncatalogued_line_at_error_level_or_above_opens_a_warning(level: str) -> None:
    """A matched line with no rule of its own opens a warning at error level and above, whatever
    the logger calls it (runtime-rs's slog says `critical`, syslog `crit`); not at info."""
    events = _bound()
    events.append(kata_line(events[-1].ts_ns + 10, "Write vfio-pci to driver_override", level))
    _, out = run(events)
    assert [f.severity for f in of_rule(out, KNOWN)] == [ev.Severity.WARNING]
