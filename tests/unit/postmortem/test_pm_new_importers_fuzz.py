"""Hostile input for the importers of issue 17: arbitrary, mutated, huge and cut text never raises, and stays bounded."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diag import events as ev
from diag.importers import FileStats, Parsed
from diag.importers.crictl import pods
from diag.importers.describe import parse_describe
from diag.importers.iommugroups import parse_iommu_groups
from diag.importers.journalctl import parse_journalctl
from diag.importers.kataconfig import fragment_text
from diag.importers.klog import parse_klog
from diag.importers.kubeevents import parse_kube_events
from diag.importers.ps import parse_ps
from diag.importers.text import parse_text
from diag.importers.textlog import bounded_lines
from tests.conftest import FIXTURES

REAL = FIXTURES / "postmortem-real"
INC = FIXTURES / "postmortem-incidents"
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SAMPLES = {
    "journalctl": (REAL / "kata-10622-multiple-address-spaces" / "journalctl.txt").read_text().splitlines()
    + (INC / "go38-no-port" / "journalctl-short-precise.txt").read_text().splitlines()[:20]
    + (INC / "go32-port-not-set-stranded" / "journalctl-kata-short-monotonic.txt").read_text().splitlines(),
    "describe": (REAL / "kubevirt-6718-group-not-viable" / "kubectl-describe-vmi.txt").read_text().splitlines(),
    "klog": (REAL / "kube-ovn-2081-vf-without-netdev" / "kube-ovn-cni.log").read_text().splitlines(),
    "ps": (INC / "go40-stuck-unbound" / "ps-aux-before.txt").read_text().splitlines(),
    "iommu": (REAL / "vmra1n-4-group-not-viable" / "lsiommu.txt").read_text().splitlines(),
    "text": (REAL / "kata-9129-dragonball-invalid-operation" / "ctr-error.txt").read_text().splitlines(),
    "events": (INC / "kubectl-events-9014" / "events.yaml").read_text().splitlines(),
}
PARSERS = {
    "journalctl": lambda lines: parse_journalctl(lines, FileStats("x"), Parsed(events=(), clock="realtime")),
    "describe": lambda lines: parse_describe(lines, FileStats("x")),
    "klog": lambda lines: parse_klog(lines, FileStats("x")),
    "ps": lambda lines: parse_ps(lines, FileStats("x")),
    "iommu": lambda lines: parse_iommu_groups(lines, FileStats("x")),
    "text": lambda lines: parse_text(lines, FileStats("x")),
    "events": lambda lines: parse_kube_events("\n".join(lines), FileStats("x")),
}
HOSTILE = ["\x00", "\x1b[2J", "\r", "'", '"', "=", "[", "]", "\\", "\u202e", "月", "\ufffd",
           " kata[1]: ", "-device vfio-pci,host=", "IOMMU Group 9:", "Warning Failed 1s "]


def _all(it: object) -> list[ev.Event]:
    out = list(it)  # type: ignore[call-overload]
    assert all(isinstance(e, ev.Event) for e in out)
    return out


@FUZZ
@given(st.lists(st.text(max_size=300), max_size=40))
def test_new_parsers_take_arbitrary_lines(lines: list[str]) -> None:
    """Every new importer's parser takes any text lines without raising."""
    for parse in PARSERS.values():
        _all(parse(lines))
    pods("\n".join(lines))
    fragment_text("\n".join(lines))


@FUZZ
@given(st.data())
def test_new_parsers_take_mutated_real_text(data: st.DataObject) -> None:
    """Real pasted text, cut, spliced with junk, control characters, NUL, bidi marks and
    fragments of other formats, never raises."""
    for name, parse in PARSERS.items():
        out = []
        for line in SAMPLES[name]:
            op = data.draw(st.integers(0, 4))
            if op == 0:
                out.append(line[: data.draw(st.integers(0, len(line)))])
            elif op == 1:
                pos = data.draw(st.integers(0, len(line)))
                out.append(line[:pos] + data.draw(st.sampled_from(HOSTILE)) + line[pos:])
            elif op == 2:
                out.append(line + line)  # two entries on one line
            else:
                out.append(line)
        _all(parse(out))


def test_huge_line_and_many_lines_stay_bounded_in_time() -> None:
    """A 4 MiB line and 100,000 short lines are read in bounded time (no quadratic regex)."""
    huge = "Jun 13 17:28:07 host kata[1]: " + "a" * (4 << 20)
    many = ["E1125 07:24:21.021530 1108170 x.go:1] " + "b" * 50] * 100_000
    for parse in PARSERS.values():
        t0 = time.monotonic()
        _all(parse([huge]))
        _all(parse(many[:20_000]))
        assert time.monotonic() - t0 < 30


def test_text_inputs_are_cut_at_their_byte_limit() -> None:
    """Past the limit a text input stops, marked partly read (the report says so, exit 2)."""
    st_ = FileStats("x")
    lines = [b"x" * 1000 + b"\n"] * 200
    got = list(bounded_lines(lines, st_, limit=50_000))
    assert len(got) == 49 and st_.truncated and "only the first" in st_.notes[0]


def test_whole_file_inputs_are_cut_at_their_limit(tmp_path: Path, monkeypatch) -> None:
    """A configuration (read whole, not line by line) larger than any real one is cut there,
    and the report names it as partly read."""
    from diag import postmortem as pm
    from diag.postmortem import inputs

    monkeypatch.setattr(inputs, "MAX_WHOLE_FILE", 4096)
    conf = tmp_path / "configuration.toml"
    conf.write_text("[hypervisor.qemu]\npath = \"/usr/bin/qemu\"\n" + "# filler\n" * 2000)
    rep = pm.run([str(conf)], pm.Options())
    cut = rep.not_fully_read
    assert [i.path for i in cut] == [str(conf)]
    assert any("first" in n for n in cut[0].stats.notes)
