"""`vfiowatch postmortem` on the command line: formats, filters, clocks, exit status, escaping."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from diag.cli import main
from diag.commands.postmortem import parse_offset
from diag.common.when import parse_when

FIX = Path(__file__).resolve().parents[2] / "fixtures"
UDEV = str(FIX / "postmortem" / "udevadm-monitor-kernel-property.txt")
IPTS = str(FIX / "postmortem" / "ip-ts-monitor-link.txt")
JOURNALD = str(FIX / "postmortem-kata" / "journalctl-kata-containerd-kernel.json")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["postmortem", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_exit_0_when_no_finding_reaches_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """Link events alone raise nothing: exit 0, and no progress bar off a terminal."""
    code, out, err = run(capsys, IPTS)
    assert code == 0 and "exit 0" in out and err == ""


def test_exit_1_when_a_finding_reaches_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """The lab's vfio-pci moves under Kata's default no-port: exit 1."""
    code, out, _ = run(capsys, UDEV)
    assert code == 1 and "vfio-bind-coldplug-disabled" in out


def test_exit_2_when_an_input_cannot_be_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing input: exit 2, the report still printed and the file listed as unreadable."""
    code, out, _ = run(capsys, UDEV, str(tmp_path / "nope.log"))
    assert code == 2 and "could not be read" in out and "vfio-bind-coldplug-disabled" in out


def test_input_not_read_whole_is_named_first_exit_2(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    """Issue 17: a text of no known format is only searched for signatures and a binary file
    is not read: both are named at the top with what was done instead, the other inputs are
    still read and the report printed, and the exit status is 2."""
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\nworld\n")
    blob = tmp_path / "core.bin"
    blob.write_bytes(b"\x7fELF\x00\x01\x02" * 50)
    code, out, _ = run(capsys, IPTS, str(junk), str(blob))
    top = out.split("\nInputs\n")[0]
    assert code == 2 and "Not read whole" in top
    assert "notes.txt: not a known artifact" in top and "core.bin: not recognised" in top
    assert "[ipmon]" in out


def test_json_format_has_findings_in_the_journal_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """--format json: schema, kind, findings with rule ids and journal fields, the timeline."""
    code, out, _ = run(capsys, "--format", "json", UDEV, JOURNALD)
    doc = json.loads(out)
    assert doc["kind"] == "vfiowatch_postmortem" and doc["schema"] == 1 and code == doc["exit_status"]
    f = doc["findings"][0]
    assert f["kind"] == "finding" and {"rule", "severity", "finding_id", "first_ns"} <= set(f)
    assert doc["timeline"] and {"ts_ns", "input", "event"} <= set(doc["timeline"][0])
    udev = next(i for i in doc["inputs"] if i["format"] == "udevadm")
    assert udev["alignment"]["uncertainty_ns"] == 0  # from the journald export's clocks


def test_markdown_format_is_a_ticket_report(capsys: pytest.CaptureFixture[str]) -> None:
    """--format markdown: title, findings table, inputs table, timeline in a details block."""
    _, out, _ = run(capsys, "--format", "markdown", UDEV)
    assert out.startswith("# vfiowatch postmortem report")
    assert "| Severity | Rule |" in out and "## Inputs" in out and "<details>" in out


def test_device_filter_keeps_only_that_device(capsys: pytest.CaptureFixture[str]) -> None:
    """--device: timeline and findings only about that BDF."""
    _, out, _ = run(capsys, "--format", "json", "--device", "0000:01:10.2", UDEV)
    doc = json.loads(out)
    assert doc["timeline"]
    assert all(e["event"].get("bdf") == "0000:01:10.2" for e in doc["timeline"])
    assert all(f.get("bdf") == "0000:01:10.2" for f in doc["findings"])


def test_sandbox_filter_keeps_the_sandbox_and_its_devices(capsys: pytest.CaptureFixture[str]) -> None:
    """--sandbox: its log lines and the events of the VF those lines name."""
    sid = "7f3c9a1e5b2d48f6a0c4e8b1d3f5a7c9e2b4d6f8a1c3e5b7d9f1a3c5e7b9d1f3"
    _, out, _ = run(capsys, "--format", "json", "--sandbox", sid, UDEV, JOURNALD)
    doc = json.loads(out)
    kinds = {e["event"]["kind"] for e in doc["timeline"]}
    assert "log_line_matched" in kinds
    assert all(e["event"].get("sandbox_id") == sid or e["event"].get("bdf") == "0000:01:10.0"
               for e in doc["timeline"])
    _, short, _ = run(capsys, "--format", "json", "--sandbox", sid[:12], UDEV, JOURNALD)
    assert json.loads(short)["timeline"] == doc["timeline"]  # the prefix the reports show


def test_since_and_until_bound_the_replay(capsys: pytest.CaptureFixture[str]) -> None:
    """--since hides earlier events; --until stops the replay there."""
    _, out, _ = run(capsys, "--format", "json", "--since", "2026-11-27T14:52:52Z",
                    "--until", "2026-11-27T14:52:53.5Z", IPTS)
    doc = json.loads(out)
    stamps = [e["ts_ns"] for e in doc["timeline"]]
    assert stamps and min(stamps) >= parse_when("2026-11-27T14:52:52Z")
    assert max(stamps) <= parse_when("2026-11-27T14:52:53.5Z")


def test_offset_places_a_monotonic_capture_on_the_wall_clock(capsys: pytest.CaptureFixture[str]) -> None:
    """--offset PATH=SECONDS: wall = monotonic + SECONDS, exactly."""
    _, out, _ = run(capsys, "--format", "json", "--offset", f"{UDEV}=1795791160.912205850", UDEV)
    doc = json.loads(out)
    assert doc["inputs"][0]["alignment"]["method"] == "explicit --offset"
    assert doc["timeline"][0]["ts_ns"] == 7_217_397_000 + 1_795_791_160_912_205_850


def test_offset_and_time_syntax() -> None:
    """--offset accepts SECONDS, @BOOT-TIME and PATH= forms; times are ISO or epoch seconds."""
    assert parse_offset("12.5") == ("*", 12_500_000_000)
    assert parse_offset("a/b.txt=@1970-01-01T00:00:10Z") == ("a/b.txt", 10_000_000_000)
    assert parse_when("1795791172.5") == 1_795_791_172_500_000_000
    assert parse_when("2026-11-27T15:52:52+01:00") == parse_when("2026-11-27T14:52:52Z")
    with pytest.raises(ValueError):
        parse_offset("x=soon")


def test_hostile_strings_are_escaped_in_text_and_markdown(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An interface name with ESC and a bidi override never reaches the terminal raw."""
    evil = tmp_path / "ip.txt.gz"
    evil.write_bytes(gzip.compress(
        "[2026-11-27T14:52:48.144176] 9: ev\x1b]0;pwned\x07il\u202e: <BROADCAST,UP> mtu 1500 state UP\n"
        "    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff\n".encode()))
    for fmt in ("text", "markdown"):
        code, out, _ = run(capsys, "--format", fmt, str(evil))
        assert code == 0
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "\\x1b" in out


def test_bad_option_is_a_titled_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --since gives a titled error with a hint and exit 2."""
    code, _, err = run(capsys, "--since", "yesterday-ish", IPTS)
    assert code == 2 and "Bad option" in err


def test_untimed_listing_gives_identity_but_cannot_hide_a_rebind(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A snapshot taken while the VF sat on vfio-pci, with the capture of its moves: the VF is
    known as VF 0 of its PF, and the rebind is still flagged (its drivers are not the start)."""
    from diag.cli import main as cli_main

    snap = tmp_path / "snap.json"
    cli_main(["--root", str(FIX / "sysfs" / "sriov-lab"), "snapshot", "--format", "json"])
    snap.write_text(capsys.readouterr().out)
    code, out, _ = run(capsys, "--format", "json", str(snap), UDEV)
    doc = json.loads(out)
    cold = [f for f in doc["findings"] if f["rule"] == "vfio-bind-coldplug-disabled"]
    assert code == 1 and cold
    assert any("drivers are not" in n for n in doc["clock_notes"])


@pytest.mark.parametrize(("case", "cold", "invalid"), [
    ("annotation-enabled", "root-port", False),
    ("annotation-not-enabled", "no-port", True),
])
def test_bundle_without_state_file_gives_the_sandbox_and_its_annotation_verdict(
        capsys: pytest.CaptureFixture[str], case: str, cold: str, invalid: bool) -> None:
    """A sandbox bundle with no persist.json (creation failed): the pod and its effective
    cold_plug_vfio (annotation honoured only when enabled), the symlinked config read once."""
    root = FIX / "kata" / case
    _, out, _ = run(capsys, "--format", "json", str(root / "run"), str(root / "opt"))
    doc = json.loads(out)
    sbs = [e["event"] for e in doc["timeline"] if e["event"]["kind"] == "sandbox_started"]
    assert len(sbs) == 1 and sbs[0].get("cold_plug_vfio", "no-port") == cold
    assert sbs[0]["pod"] == "vf-pod"
    assert any(i["format"] == "duplicate" for i in doc["inputs"])
    rules = {f["rule"] for f in doc["findings"]}
    assert ("kata-config-invalid" in rules) == invalid


def test_fifo_among_inputs_is_refused_not_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A FIFO in an input directory is listed as not a regular file (never opened: no hang)."""
    import os

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "ip.txt").write_text(Path(IPTS).read_text())
    code, out, _ = run(capsys, str(tmp_path))
    assert code == 2 and "not a regular file" in out


def test_dropins_merge_in_name_order_over_the_main_file(capsys: pytest.CaptureFixture[str]) -> None:
    """configuration.toml (symlink, read once) + config.d/10-vfio.toml then 20-ports.toml: the
    effective values are root-port and 4 root ports, each with its drop-in as origin."""
    _, out, _ = run(capsys, "--format", "json", str(FIX / "kata" / "dropins" / "usr"))
    doc = json.loads(out)
    (cfg,) = [e["event"]["config"] for e in doc["timeline"]
              if e["event"]["kind"] == "kata_config_loaded"]
    assert cfg["cold_plug_vfio"] == "root-port" and cfg["pcie_root_port"] == 4
    origins = {s["key"]: s["origin"] for s in cfg["settings"]}
    assert origins["pcie_root_port"].endswith("config.d/20-ports.toml")
    assert origins["cold_plug_vfio"].endswith("config.d/10-vfio.toml")


def test_a_long_timeline_keeps_its_start_each_finding_in_context_and_its_end(
        capsys: pytest.CaptureFixture[str]) -> None:
    """With --limit far below the entries: the first and last quarter, every finding with
    entries around it, in order, the gaps counted in the text."""
    _, out, _ = run(capsys, "--format", "json", "--limit", "16", UDEV)
    doc = json.loads(out)
    seqs = [e["seq"] for e in doc["timeline"]]
    assert len(seqs) <= 16 and seqs == sorted(seqs) and doc["timeline_total"] > 16
    assert seqs[:4] == [1, 2, 3, 4] and seqs[-1] == doc["timeline_total"]
    opened = [e for e in doc["timeline"] if e["event"]["kind"] == "finding"]
    assert opened, "a finding and its context must survive the cut"
    _, text, _ = run(capsys, "--limit", "16", UDEV)
    assert "entries not shown" in text
