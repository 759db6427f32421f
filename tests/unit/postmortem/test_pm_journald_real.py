"""A real journal file, written by systemd-journal-remote and exported by this host's journalctl."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from diag import events as ev
from diag import postmortem as pm

REMOTE = Path("/lib/systemd/systemd-journal-remote")
EXPORT = Path(__file__).resolve().parents[2] / "fixtures" / "postmortem-kata" / "entries.export"


@pytest.mark.skipif(not REMOTE.exists() or not shutil.which("journalctl"),
                    reason="needs systemd-journal-remote and journalctl (deploy/setup-host.sh)")
def test_journalctl_json_of_a_real_journal_file_is_read(tmp_path: Path) -> None:
    """Export format -> a real .journal (journal-remote) -> `journalctl -o json` (gzip too) ->
    postmortem: every Kata/kernel signature found, the exact #10162 line, clocks usable."""
    journal = tmp_path / "x.journal"
    with open(EXPORT, "rb") as fh:
        subprocess.run([str(REMOTE), "-o", str(journal), "-"], stdin=fh, check=True,
                       capture_output=True)
    out = subprocess.run(["journalctl", "--file", str(journal), "-o", "json", "--no-pager"],
                         check=True, capture_output=True).stdout
    exported = tmp_path / "export.json.gz"
    import gzip

    exported.write_bytes(gzip.compress(out))
    report = pm.run([str(exported)], pm.Options())
    (inp,) = report.inputs
    assert inp.format == "journald" and inp.stats.bad_lines == 0
    lines = [e.event for e in report.timeline if isinstance(e.event, ev.LogLineMatched)]
    sigs = {x.signature for x in lines}
    assert {"qemu-bus-not-found", "vfio-device-request", "cannot-start-vm"} <= sigs
    assert any(x.text.endswith("Bus '<unknown PCIePortBusPrefix: >0' not found") for x in lines)
    assert inp.parsed is not None and len({a.boot_id for a in inp.parsed.anchors}) == 1


@pytest.mark.skipif(not REMOTE.exists() or not shutil.which("journalctl"),
                    reason="needs systemd-journal-remote and journalctl (deploy/setup-host.sh)")
def test_journalctl_export_format_with_a_binary_field_is_read(tmp_path: Path) -> None:
    """`journalctl -o export` of a real journal, one MESSAGE binary (it holds a newline, so
    journald writes it as KEY, size, data): recognised, decoded, matched, clocks kept."""
    binary = b"vfio-pci 0000:01:10.0: Relaying device request to user (#1)\nsecond line"
    entry = (b"MESSAGE\n" + len(binary).to_bytes(8, "little") + binary + b"\n"
             b"_TRANSPORT=kernel\nSYSLOG_IDENTIFIER=kernel\n__REALTIME_TIMESTAMP=1795791173722881\n"
             b"__MONOTONIC_TIMESTAMP=12810675\n_BOOT_ID=5d0c2a1f9e6b4c3d8a7f1e2d3c4b5a69\n\n")
    journal = tmp_path / "x.journal"
    subprocess.run([str(REMOTE), "-o", str(journal), "-"], input=EXPORT.read_bytes() + entry,
                   check=True, capture_output=True)
    out = subprocess.run(["journalctl", "--file", str(journal), "-o", "export", "--no-pager"],
                         check=True, capture_output=True).stdout
    assert b"\nMESSAGE\n" in out  # journalctl really wrote a binary field
    exported = tmp_path / "journal.export"
    exported.write_bytes(out)
    report = pm.run([str(exported)], pm.Options())
    (inp,) = report.inputs
    assert inp.format == "journal-export" and inp.stats.bad_lines == 0, inp.stats
    texts = [e.event.text for e in report.timeline if isinstance(e.event, ev.LogLineMatched)]
    assert any(t.startswith("vfio-pci 0000:01:10.0: Relaying device request to user (#1)\n")
               for t in texts)
    assert any("Bus '<unknown PCIePortBusPrefix: >0' not found" in t for t in texts)
    assert inp.parsed is not None and inp.parsed.anchors
