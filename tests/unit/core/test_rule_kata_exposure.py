"""Rule kata-vfio-exposure: opens per (handler, issue) when the facts say so, resolves when they change."""

from __future__ import annotations

from diag import events as ev
from diag.core.correlator import Correlator

T0 = 1_795_791_194_000_000_000
S = 1_000_000_000
VF = ev.VfCandidate(bdf="0000:01:10.2", pf="0000:01:00.0", driver="igbvf", netdevs=("eth2",))
VF2 = ev.VfCandidate(bdf="0000:01:10.4", pf="0000:01:00.0", driver="igbvf", netdevs=("eth3",))
DPKG = ev.KataVersionReading(source="dpkg", version="3.8.0",
                             detail="dpkg kata-containers 3.8.0-1 (/var/lib/dpkg/status) owns /usr/bin/containerd-shim-kata-v2")
CFG = "/usr/share/defaults/kata-containers/configuration.toml"
FACTS = ev.KataHandlerFacts(handler="kata", version="3.8.0", version_source=DPKG, readings=(DPKG,),
                            config_path=CFG, cold_plug_origin=f"file:{CFG}", vfs=(VF,),
                            vfs_basis="every VF on a host network driver")


def observed(f: ev.KataHandlerFacts, ts: int = T0, *, gone: bool = False) -> ev.KataFactsObserved:
    return ev.KataFactsObserved(ts_ns=ts, source="kata", facts=f, gone=gone)


def exposure(findings: list[ev.Finding]) -> list[ev.Finding]:
    return [f for f in findings if f.rule == "kata-vfio-exposure"]


def test_kata_38_no_port_with_a_vf_opens_an_error_naming_the_version_source_and_the_fix() -> None:
    """#10162: error, summary names handler and issue; labels carry the version's source; the remedy has the drop-in."""
    c = Correlator()
    (f,) = exposure(c.feed(observed(FACTS)))
    assert (f.status, f.severity, f.finding_id) == ("open", ev.Severity.ERROR, f"kata-vfio-exposure/kata/10162/{T0}")
    assert f.summary.startswith("handler kata exposed to Kata #10162")
    labels = dict(f.labels)
    assert (labels["issue"], labels["version"], labels["version_source"]) == ("10162", "3.8.0", "dpkg")
    assert "owns /usr/bin/containerd-shim-kata-v2" in f.explanation
    assert ('write /usr/share/defaults/kata-containers/config.d/90-vfiowatch-vfio-cold-plug.toml: '
            '[hypervisor.qemu] cold_plug_vfio = "root-port"; pcie_root_port = 1') in f.remedy
    assert "https://github.com/kata-containers/kata-containers/issues/10162" in f.explanation


def test_the_fixing_drop_in_resolves_it_saying_what_changed() -> None:
    """root-port with a root port: the finding resolves, its reason names cold_plug_vfio and its drop-in."""
    c = Correlator()
    c.feed(observed(FACTS))
    fixed = ev.replace(FACTS, cold_plug_vfio="root-port", cold_plug_origin="drop-in:/x/config.d/90.toml",
                    pcie_root_port=1, pcie_root_port_origin="drop-in:/x/config.d/90.toml")
    (f,) = exposure(c.feed(observed(fixed, T0 + S)))
    assert f.status == "resolved" and f.resolved_ns == T0 + S
    assert f.resolved_reason.startswith("cold_plug_vfio is now 'root-port' (drop-in:/x/config.d/90.toml)")
    assert exposure(c.active) == []


def test_root_port_alone_trades_10162_for_the_rp0_failure() -> None:
    """The issue's literal drop-in (root-port, pcie_root_port 0): #10162 resolves and #5676 opens."""
    c = Correlator()
    c.feed(observed(FACTS))
    out = exposure(c.feed(observed(ev.replace(FACTS, cold_plug_vfio="root-port"), T0 + S)))
    assert [(f.status, dict(f.labels)["issue"]) for f in out] == [("resolved", "10162"), ("open", "5676")]
    assert dict(out[1].labels)["inference"] == "yes"


def test_a_changed_vf_list_alone_updates_nothing() -> None:
    """Another VF appearing keeps the finding as it is (no `updated` record); the snapshot sees both VFs."""
    c = Correlator()
    c.feed(observed(FACTS))
    assert exposure(c.feed(observed(ev.replace(FACTS, vfs=(VF, VF2)), T0 + S))) == []
    (active,) = exposure(list(c.snapshot().active_findings))
    assert dict(active.labels)["vfs"] == "2"
    assert c.snapshot().kata_facts[0].vfs == (VF, VF2)


def test_no_vf_left_resolves_and_a_new_vf_opens_again() -> None:
    """Latent (no VF pods can be given) opens nothing; the metric's rows stay, marked not exposed."""
    c = Correlator()
    c.feed(observed(FACTS))
    none = ev.replace(FACTS, vfs=(), vfs_basis="every VF on a host network driver")
    (f,) = exposure(c.feed(observed(none, T0 + S)))
    assert f.status == "resolved" and f.resolved_reason.startswith("no VF can be given to pods now")
    (a,) = c.snapshot().kata_exposure
    assert [(r.issue, r.exposed) for r in a.rows] == [("10162", False)]
    (again,) = exposure(c.feed(observed(FACTS, T0 + 2 * S)))
    assert again.status == "open" and again.finding_id.endswith(str(T0 + 2 * S))


def test_an_upgrade_resolves_one_issue_and_opens_the_next() -> None:
    """3.8 -> 3.9 with no-port: #10162 (error) resolves naming the new version, #10210 (warning) opens."""
    c = Correlator()
    c.feed(observed(FACTS))
    v39 = ev.KataVersionReading(source="kata-deploy", version="3.9.0", detail="/opt/kata/VERSION (kata-deploy)")
    out = exposure(c.feed(observed(ev.replace(FACTS, version="3.9.0", version_source=v39), T0 + S)))
    assert [(f.status, f.severity.label) for f in out] == [("resolved", "error"), ("open", "warning")]
    assert out[0].resolved_reason == "Kata is now 3.9.0 (read from /opt/kata/VERSION (kata-deploy))"


def test_a_handler_no_longer_configured_resolves() -> None:
    c = Correlator()
    c.feed(observed(FACTS))
    (f,) = exposure(c.feed(observed(FACTS, T0 + S, gone=True)))
    assert f.resolved_reason == "handler kata is no longer configured"
    assert c.snapshot().kata_exposure == ()


def test_the_same_facts_again_change_nothing() -> None:
    """A restatement (journal part start, a round with nothing new) is not news."""
    c = Correlator()
    c.feed(observed(FACTS))
    assert exposure(c.feed(observed(FACTS, T0 + S))) == []


def test_unknown_version_is_a_warning_naming_the_versions_at_risk() -> None:
    c = Correlator()
    unknown = ev.replace(FACTS, version="", version_source=None,
                      readings=(ev.KataVersionReading(source="binary", detail="/usr/local/bin/x: not an ELF file",
                                                      exact=False),))
    (f,) = exposure(c.feed(observed(unknown)))
    assert f.severity is ev.Severity.WARNING and dict(f.labels)["issue"] == "unknown-version"
    assert "3.3-3.8 (#10162" in f.explanation and "not an ELF file" in f.explanation


def test_the_line_that_shows_it_happened_joins_the_finding_once() -> None:
    """QEMU's #10162 line updates the finding (it happened, with the sandbox); a second one is quiet evidence."""
    c = Correlator()
    c.feed(observed(FACTS))
    line = ev.LogLineMatched(ts_ns=T0 + S, source="kata", signature="qemu-bus-not-found", sandbox_id="7f3c9a1e5b2d",
                             text="qemu-system-x86_64: -device vfio-pci,host=0000:01:10.2,bus=<unknown PCIePortBusPrefix: "
                                  ">0: Bus '<unknown PCIePortBusPrefix: >0' not found", origin="journald:kata")
    (f,) = exposure(c.feed(line))
    assert f.status == "updated" and f.summary.endswith("(it happened: qemu-bus-not-found at journald:kata)")
    assert f.sandbox_id == "7f3c9a1e5b2d" and dict(f.labels)["happened"] == "qemu-bus-not-found"
    assert exposure(c.feed(ev.replace(line, ts_ns=T0 + 2 * S))) == []
    (active,) = exposure(list(c.snapshot().active_findings))
    assert len(active.evidence) == 3


def test_a_line_of_another_issue_does_not_join() -> None:
    """Kata's >= 3.9 refusal is #10210's symptom, not #10162's."""
    c = Correlator()
    c.feed(observed(FACTS))
    refusal = ev.LogLineMatched(ts_ns=T0 + S, source="kata", signature="coldplug-disabled-refusal",
                                text="unable to add PhysicalEndpoint eth2 because cold_plug_vfio is disabled")
    assert exposure(c.feed(refusal)) == []


def test_no_kata_installed_opens_nothing() -> None:
    c = Correlator()
    assert exposure(c.feed(observed(ev.KataHandlerFacts(handler="default", assumed=True, vfs=(VF,))))) == []


def test_the_facts_record_round_trips_the_journal_codec() -> None:
    from diag import codec

    e = observed(FACTS)
    assert codec.loads(codec.dumps(e)) == e
