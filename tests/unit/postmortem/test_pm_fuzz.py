"""Hostile input: every postmortem parser, fed arbitrary and mutated lines, never raises."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diag import events as ev
from diag.importers import FileStats, iter_lines, sniff
from diag.importers.dmesg import parse_dmesg
from diag.importers.ipmon import parse_ip_monitor
from diag.importers.journal import parse_journal
from diag.importers.journald import parse_journal_export, parse_journald_json
from diag.importers.kataconfig import parse_group
from diag.importers.katastate import parse_state
from diag.importers.logfmt import parse_logfmt_lines
from diag.importers.lspci import parse_lspci
from diag.importers.snapshot import parse_snapshot
from diag.importers.udevadm import parse_udevadm

FIX = Path(__file__).resolve().parents[2] / "fixtures"
SAMPLES = {
    "udevadm": (FIX / "postmortem" / "udevadm-monitor-kernel-property.txt").read_text().splitlines()[:80],
    "ipmon": (FIX / "postmortem" / "ip-ts-monitor-link.txt").read_text().splitlines(),
    "journald": (FIX / "postmortem-kata" / "journalctl-kata-containerd-kernel.json").read_text().splitlines()[:8],
    "logfmt": (FIX / "postmortem-kata" / "containerd.log").read_text().splitlines(),
}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text_lines = st.lists(st.text(max_size=200), max_size=30)


def _mutate(lines: list[str], data: st.DataObject) -> list[str]:
    """Real lines, some cut, spliced with junk or control characters."""
    out = []
    for line in lines:
        op = data.draw(st.integers(0, 5))
        if op == 0:
            out.append(line[: data.draw(st.integers(0, max(0, len(line))))])
        elif op == 1:
            out.append(line + data.draw(st.text(max_size=40)))
        elif op == 2:
            pos = data.draw(st.integers(0, len(line)))
            out.append(line[:pos] + data.draw(st.sampled_from(["\x00", "\x1b[2J", "\r", "'", '"', "=", "[", "]", "\\"])) + line[pos:])
        else:
            out.append(line)
    return out


def _all_events(it: object) -> list[ev.Event]:
    out = list(it)  # type: ignore[call-overload]
    assert all(isinstance(e, ev.Event) for e in out)
    return out


@FUZZ
@given(text_lines)
def test_text_parsers_survive_arbitrary_lines(lines: list[str]) -> None:
    """udevadm, ip monitor, logfmt and lspci parsers take any text; damage is counted."""
    for parse in (parse_udevadm, parse_ip_monitor, parse_lspci, parse_dmesg):
        stats = FileStats("x")
        _all_events(parse(lines, stats))
        assert stats.bad_lines <= stats.lines
    _all_events(parse_logfmt_lines(lines, FileStats("x")))


@FUZZ
@given(st.data())
def test_text_parsers_survive_mutated_real_captures(data: st.DataObject) -> None:
    """Real captures with cut lines, junk and control characters never raise."""
    for name, parse in (("udevadm", parse_udevadm), ("ipmon", parse_ip_monitor),
                        ("logfmt", parse_logfmt_lines)):
        _all_events(parse(_mutate(SAMPLES[name], data), FileStats("x")))  # type: ignore[operator]
    lines = [x.encode() + b"\n" for x in _mutate(SAMPLES["journald"], data)]
    _all_events(parse_journald_json(lines, FileStats("x"), []))


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_binary_journal_and_journald_lines_never_raise(raw: list[bytes]) -> None:
    """The agent's journal and journald readers take arbitrary bytes per line."""
    from diag.common.errors import JournalFormatError

    with contextlib.suppress(JournalFormatError):  # a newer-schema header is refused on purpose
        _all_events(parse_journal(raw))
    _all_events(parse_journald_json(raw, FileStats("x"), []))
    _all_events(parse_journal_export(raw, FileStats("x"), []))
    _all_events(parse_journal_export([x + b"\n" for x in raw], FileStats("x"), []))


@FUZZ
@given(st.text(max_size=2000))
def test_whole_file_parsers_survive_arbitrary_documents(text: str) -> None:
    """Snapshot JSON, Kata TOML and state JSON decoders take any document."""
    _all_events(parse_snapshot(text, FileStats("x")))
    _all_events(parse_group(("/etc/kata-containers/configuration.toml", text), []))
    _all_events(parse_group(None, [("/etc/kata-containers/config.d/10.toml", text)]))
    _all_events(parse_state(text, "/run/vc/sbs/abcdef/persist.json"))
    _all_events(parse_state("{" + text, "/run/kata/abcdef/state.json"))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=4000))
def test_files_of_arbitrary_bytes_plain_or_gzip_never_raise(blob: bytes) -> None:
    """Any bytes on disk, plain, gzip, or gzip cut anywhere: sniffing and reading never raise."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name, data in (("a", blob), ("b", gzip.compress(blob)),
                           ("c", gzip.compress(blob)[: max(2, len(blob) // 3)])):
            p = Path(d) / name
            p.write_bytes(data)
            sniff(str(p))
            list(iter_lines(str(p), FileStats(str(p))))
