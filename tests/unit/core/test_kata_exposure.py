"""The exposure table: Kata version x runtime x cold_plug_vfio x VFs -> the known issue it will hit."""

from __future__ import annotations

import pytest

from diag import events as ev
from diag.core import kata_exposure as kx

VF = kx.VfCandidate(bdf="0000:01:10.2", pf="0000:01:00.0", driver="igbvf", netdevs=("eth2",))
DPKG = kx.VersionReading(source="dpkg", detail="dpkg kata-containers 3.8.0-1 owns /usr/bin/containerd-shim-kata-v2",
                         version="3.8.0-1")


def facts(version: str | None, cold: str = "no-port", *, runtime: str = "go", vfs: bool = True,
          root_ports: int = 0, annotation: bool = False, hot: str = "no-port") -> kx.HandlerFacts:
    v = version or ""
    return kx.HandlerFacts(
        handler="kata", runtime=runtime, version=v, version_source=DPKG if v else None,
        readings=(DPKG,) if v else (kx.VersionReading(source="dpkg", detail="no Kata package in dpkg"),),
        config_path="/usr/share/defaults/kata-containers/configuration.toml",
        cold_plug_vfio=cold, cold_plug_origin="file:/usr/share/defaults/kata-containers/configuration.toml",
        hot_plug_vfio=hot, pcie_root_port=root_ports, annotation_enabled=annotation,
        vfs=(VF,) if vfs else (), vfs_basis="every VF on a host network driver")


def issues(a: kx.Assessment) -> list[tuple[str, str, bool]]:
    return [(r.issue, r.severity.label, r.exposed) for r in a.rows]


@pytest.mark.parametrize(("text", "want"), [
    ("3.8.0", (3, 8, 0, 1, 0)), ("v3.9.0", (3, 9, 0, 1, 0)), ("3.2.0-rc0", (3, 2, 0, 0, 0)),
    ("3.2.0-alpha1", (3, 2, 0, 0, 0)), ("3.8.0~rc1", (3, 8, 0, 0, 0)), ("3.8.0-12-gabcdef0", (3, 8, 0, 1, 12)),
    ("4.1", (4, 1, 0, 1, 0)), ("1.3.0~rc1", (1, 3, 0, 0, 0)),
])
def test_versions_parse_as_kata_numbers_them(text: str, want: tuple[int, ...]) -> None:
    """Release, pre-release (- or ~), git-describe and two-part versions parse to their parts."""
    v = kx.parse_version(text)
    assert v is not None and (v.major, v.minor, v.patch, v.pre_rank, v.ahead) == want


@pytest.mark.parametrize("text", ["", "@VERSION@", "b7051890af22f80a9f9d8bb9b48b2e3e2a9fee52", "latest", "3"])
def test_non_versions_are_refused(text: str) -> None:
    """Placeholders, commits and words are not versions."""
    assert kx.parse_version(text) is None


def test_versions_order_pre_releases_before_their_release() -> None:
    """3.2.0-alpha1 < 3.2.0 < 3.2.0-5-gabc < 3.3.0; a pre-release is judged as the release before it."""
    vs = [kx.parse_version(t) for t in ("3.3.0", "3.2.0-5-gabcdef0", "3.2.0", "3.2.0-alpha1")]
    assert [str(v) for v in sorted(v for v in vs if v)] == ["3.2.0-alpha1", "3.2.0", "3.2.0-5-gabcdef0", "3.3.0"]
    rc = kx.parse_version("3.9.0-rc0")
    assert rc is not None and not rc.at_least(3, 9) and rc.at_least(3, 8)


@pytest.mark.parametrize(("pkg", "want"), [
    ("1:3.8.0-1", "3.8.0"), ("3.8.0~rc1-2ubuntu1", "3.8.0~rc1"), ("1.3.0~rc1+git.22aedc4-49", "1.3.0~rc1"),
    ("3.8.0", "3.8.0"), ("1.0.0+git.086d197-42", "1.0.0"),
])
def test_package_versions_lose_epoch_revision_and_build_suffix(pkg: str, want: str) -> None:
    """dpkg/rpm versions give the upstream number (epoch, Debian revision and +git suffix dropped)."""
    assert kx.upstream_of_package_version(pkg) == want


# The table: (version, runtime, cold_plug_vfio, root ports, annotation) -> [(issue, severity)]
TABLE = [
    ("3.2.0", "go", "no-port", 0, False, [("9014", "error")]),
    ("3.2.2", "go", "root-port", 2, False, [("9014", "error")]),
    ("3.3.0", "go", "no-port", 0, False, [("10162", "error")]),
    ("3.8.0", "go", "no-port", 0, False, [("10162", "error")]),
    ("3.8.0", "go", "no-port", 0, True, [("10162", "error")]),
    ("3.8.0", "go", "root-port", 1, False, []),
    ("3.8.0", "go", "root-port", 0, False, [("5676", "error")]),
    ("3.9.0", "go", "no-port", 0, False, [("10210", "warning")]),
    ("3.9.0-rc0", "go", "no-port", 0, False, [("10162", "error")]),
    ("3.32.0", "go", "root-port", 4, False, []),
    ("4.0.0", "go", "no-port", 0, False, [("10210", "warning")]),
    ("4.0.0", "go", "no-port", 0, True, [("10210", "warning"), ("13837", "error")]),
    ("4.1.0", "go", "root-port", 2, False, [("13837", "error")]),
    ("4.1.0", "go", "root-port", 0, False, [("5676", "error"), ("13837", "error")]),
    ("3.8.0", "rs", "no-port", 0, False, [("10162", "error")]),
    ("4.1.0", "rs", "no-port", 0, False, [("10162", "error")]),
    ("4.1.0", "rs", "root-port", 1, False, []),
    (None, "rs", "no-port", 0, False, [("10162", "error")]),
    (None, "go", "no-port", 0, False, [("unknown-version", "warning")]),
    (None, "go", "root-port", 1, False, [("unknown-version", "warning")]),
    ("3.1.0", "go", "no-port", 0, False, []),
]


@pytest.mark.parametrize(("version", "runtime", "cold", "ports", "ann", "want"), TABLE)
def test_each_row_of_the_timeline_gives_its_known_issue(version: str | None, runtime: str, cold: str,
                                                        ports: int, ann: bool, want: list[tuple[str, str]]) -> None:
    """Each (version, runtime, cold_plug_vfio) of kata-facts §0 maps to the issue and severity it will meet."""
    a = kx.assess(facts(version, cold, runtime=runtime, root_ports=ports, annotation=ann))
    assert [(i, s) for i, s, _ in issues(a)] == want
    assert all(exposed for _, _, exposed in issues(a))


@pytest.mark.parametrize(("version", "runtime", "cold", "ports", "ann", "want"), TABLE)
def test_without_vfs_the_same_rows_are_latent(version: str | None, runtime: str, cold: str,
                                              ports: int, ann: bool, want: list[tuple[str, str]]) -> None:
    """With no VF pods could be given, the rows are the same but not exposed (latent)."""
    a = kx.assess(facts(version, cold, runtime=runtime, root_ports=ports, annotation=ann, vfs=False))
    assert [(i, s) for i, s, _ in issues(a)] == want
    assert not any(exposed for _, _, exposed in issues(a))


def test_the_10162_row_says_why_what_happens_and_the_drop_in() -> None:
    """Kata 3.8 + no-port + a VF: the version and its source, the origin, the VF, QEMU's bus error, the drop-in."""
    (r,) = kx.assess(facts("3.8.0")).rows
    text = "\n".join(r.why)
    assert "Kata 3.8.0 (Go runtime), read from dpkg kata-containers 3.8.0-1 owns /usr/bin/containerd-shim-kata-v2" in text
    assert "cold_plug_vfio = 'no-port' (file:/usr/share/defaults/kata-containers/configuration.toml)" in text
    assert "0000:01:10.2 (eth2)" in text
    assert "Bus '<unknown PCIePortBusPrefix: >0' not found" in r.first_pod
    assert r.dropin.splitlines()[:4] == [
        "# /usr/share/defaults/kata-containers/config.d/90-vfiowatch-vfio-cold-plug.toml",
        "[hypervisor.qemu]", 'cold_plug_vfio = "root-port"',
        "pcie_root_port = 1   # one per VF a pod is given (at most 16)"]
    assert r.url == "https://github.com/kata-containers/kata-containers/issues/10162"
    assert r.severity is ev.Severity.ERROR and not r.inference


def test_the_drop_in_turns_hot_plug_off_when_it_is_set() -> None:
    """Kata refuses both plug settings at once, so the drop-in resets hot_plug_vfio when it is set."""
    (r,) = kx.assess(facts("3.8.0", hot="root-port")).rows
    assert 'hot_plug_vfio = "no-port"   # Kata refuses both set' in r.dropin


def test_rows_that_rest_on_an_inference_say_so() -> None:
    """runtime-rs and the rp0 row rest on the agent's reading of code paths: marked inference."""
    (rs,) = kx.assess(facts("4.1.0", runtime="rs")).rows
    (rp0,) = kx.assess(facts("3.8.0", "root-port")).rows
    assert rs.inference and rp0.inference
    assert any(f.basis == "inference" and "same failure class" in f.text for f in rs.facts)


def test_annotations_help_go_pods_but_not_runtime_rs() -> None:
    """An enabled cold_plug_vfio annotation saves annotated Go pods; runtime-rs has no handler for it."""
    (go,) = kx.assess(facts("3.8.0", annotation=True)).rows
    (rs,) = kx.assess(facts("3.8.0", runtime="rs", annotation=True)).rows
    assert "Pods annotated io.katacontainers.config.hypervisor.cold_plug_vfio=root-port are not exposed" in go.first_pod
    assert "runtime-rs has no handler for it" in rs.first_pod


def test_unknown_version_names_the_versions_at_risk() -> None:
    """Version unknown: a warning that says so and lists every version line at risk."""
    (r,) = kx.assess(facts(None)).rows
    assert r.why[0] == "Kata version unknown (no Kata package in dpkg)"
    assert "3.2.x (#9014" in r.first_pod and "3.3-3.8 (#10162" in r.first_pod and ">= 3.9 (#10210" in r.first_pod


def test_old_and_non_qemu_handlers_are_noted_not_assessed() -> None:
    """Kata < 3.2 and a non-QEMU Go handler give no row, and a note says why."""
    assert kx.assess(facts("3.1.0")).notes == ("Kata 3.1.0 predates cold_plug_vfio (3.2.0): not assessed",)
    clh = kx.HandlerFacts(handler="kata-clh", hypervisor="clh", version="3.8.0", vfs=(VF,))
    assert kx.assess(clh).rows == () and "not assessed" in kx.assess(clh).notes[0]
    assert kx.assess(kx.HandlerFacts(handler="default", assumed=True)).rows == ()
