"""The signature catalogue on the real lines of public reports (tests/fixtures/postmortem-real)."""

from __future__ import annotations

import pytest

from diag.core.rules.kata_errors import KNOWN
from diag.sources.kata import loglines, signatures
from tests.conftest import FIXTURES

REAL = FIXTURES / "postmortem-real"

# (bundle/file, a piece of the line that picks it, signature, BDF, IOMMU group); the bundle's
# source is in tests/fixtures/postmortem-real/expected.toml and README.md.
CASES = [
    ("kata-10162-qemu-bus-no-port/kata-qemu-line.log", "Bus '", "qemu-bus-not-found",
     "0000:84:01.1", None),
    ("kata-9014-port-not-set/kubectl-describe-events.txt", "port is not set", "port-not-set",
     "0000:5e:02.1", None),
    ("kata-5676-rp0-translate/pod-log.txt", "Bus 'rp0'", "qemu-bus-not-found", "0000:00:71.6",
     None),
    ("kata-5676-rp0-translate/pod-log.txt", "unable to translate", "agent-pci-translate-failed",
     "0000:71:00.6", None),
    ("kata-4091-translate-vfio-bound/error.txt", "Unable to translate",
     "agent-pci-translate-failed", "0000:3b:00.4", None),
    ("kata-10622-multiple-address-spaces/journalctl.txt", "can't reserve",
     "vfio-bar-reserve-failed", "0000:01:00.0", None),
    ("kata-10622-multiple-address-spaces/journalctl.txt", "kata[17889]: time=\"2024-12-06T09:04:26",
     "qemu-bar-mmap-failed", "0000:01:00.0", None),
    ("kata-pr3491-qmp-device-not-found/journalctl-kata.txt", "level=error",
     "qmp-device-not-found", None, None),
    ("kata-2938-bridge-in-iommu-group/ctr-run.txt", "ctr: QMP", "qmp-device-not-found", None, None),
    ("kata-2774-vfio-operation-not-permitted/kubectl-describe-event.txt", "Operation not permitted",
     "vfio-open-failed", "0000:3b:00.4", 84),
    ("kata-1669-unbind-hang-device-request/dmesg-quote.txt", "Relaying", "vfio-device-request",
     "0000:5c:00.0", None),
    ("pcileech-560-request-blocked/dmesg.txt", "No device request",
     "vfio-device-request-blocked", "0000:02:00.0", None),
    ("kubevirt-6718-group-not-viable/kubectl-describe-vmi.txt", "7s ", "vfio-group-not-viable",
     "0000:01:00.0", 1),
    ("vmra1n-4-group-not-viable/qemu-error.txt", "group 8", "vfio-group-not-viable",
     "0000:00:1d.2", 8),
    ("vmra1n-4-group-not-viable/qemu-error.txt", "Please ensure", "vfio-group-not-viable-hint",
     None, None),
    ("kata-5799-bus-no-hotplug/qmp-session.txt", "hotplugging", "qmp-bus-no-hotplug", None, None),
    ("kata-9509-dragonball-no-resource/ctr-error.txt", "CreateVfioDevice",
     "dragonball-vfio-create-failed", None, None),
    ("kata-9129-dragonball-invalid-operation/ctr-error.txt", "InvalidOperation",
     "dragonball-vfio-add-failed", "0000:45:00.0", None),
    ("kata-6424-dragonball-pci-hotplug-options/ctr-error.txt", "does not support",
     "dragonball-pci-hotplug-unsupported", None, None),
    ("kata-tests-2624-clh-iommu-table/journal.txt", "cloud-hypervisor", "clh-vfio-failed", None,
     None),
    ("kata-6221-rp0-connectx5/error.txt", "rp0", "qemu-bus-not-found", "0000:3b:04.1", None),
    ("kube-ovn-2081-vf-without-netdev/kube-ovn-cni.log", "E1125 07:24:21.021530",
     "cni-vf-netdev-missing", "0000:ca:00.6", None),
]


def real_line(where: str, piece: str) -> str:
    text = (REAL / where).read_text()
    return next(line for line in text.splitlines() if piece in line)


@pytest.mark.parametrize(("where", "piece", "sig", "bdf", "group"), CASES,
                         ids=[f"{c[2]}:{c[0].split('/')[0]}" for c in CASES])
def test_real_line_matches_its_signature(where: str, piece: str, sig: str, bdf: str | None,
                                         group: int | None) -> None:
    """Each public report's line is recognised as its failure, with its device (normalised from
    `5e:02.1`, `00:71.6`, `host=01:00.0` forms) and IOMMU group."""
    m = signatures.match(real_line(where, piece))
    assert m is not None
    assert (m.signature.id, m.bdf, m.iommu_group) == (sig, bdf, group)


def test_every_new_failure_has_a_meaning_and_a_remedy() -> None:
    """Every failure signature the reports added has the rule's severity, meaning and fix."""
    for _, _, sig, _, _ in CASES:
        sev = signatures.BY_ID[sig].severity
        if sev != "info":
            assert sig in KNOWN, sig


def test_wrapper_message_is_reported_by_its_errors_signature() -> None:
    """`failed to hotplug VFIO device` with error=`... group 40 is not viable` (Kata #4211) is
    the group failure, not the generic hot-plug one; alone it is the generic one."""
    line = real_line("kata-4211-group-not-viable-hotplug/journalctl-t-kata.txt", "hotplug")
    e = loglines.to_event(loglines.decode_text_line(line), ts_ns=0)  # type: ignore[arg-type]
    assert e is not None and (e.signature, e.bdf, e.iommu_group) == (
        "vfio-group-not-viable", "0000:1a:00.0", 40)
    bare = loglines.decode_text_line('level=error msg="failed to hotplug VFIO device"')
    assert loglines.to_event(bare, ts_ns=0).signature == "vfio-hotplug-failed"  # type: ignore[arg-type,union-attr]


def test_qemu_bus_severity_depends_on_the_bus() -> None:
    """#10162's empty port prefix is critical; a named missing bus (`rp0`) is an error."""
    from diag import events as ev
    from diag.core.rules.kata_errors import KataKnownError
    from diag.core.thresholds import CoreConfig

    rule = KataKnownError(CoreConfig())
    no_port = real_line("kata-10162-qemu-bus-no-port/kata-qemu-line.log", "Bus '")
    rp0 = real_line("kata-6221-rp0-connectx5/error.txt", "rp0")
    sev = {}
    for name, text in (("no-port", no_port), ("rp0", rp0)):
        e = ev.LogLineMatched(ts_ns=0, source="kata", signature="qemu-bus-not-found", text=text)
        cls = rule._classify(e)
        assert cls is not None
        sev[name] = cls[0]
    assert sev == {"no-port": ev.Severity.CRITICAL, "rp0": ev.Severity.ERROR}
