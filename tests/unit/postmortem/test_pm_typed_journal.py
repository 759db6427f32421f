"""Issue 18 item 5: a journal line whose fields have the wrong types is a bad line, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag import codec
from diag.cli import main

JOURNAL = Path(__file__).resolve().parents[2] / "fixtures" / "journals" / "lab-scenario1.jsonl"

BIND = ('{"kind":"device_bound","ts_ns":%s,"source":"uevent","bdf":%s,"driver":"vfio-pci",'
        '"previous_driver":"igbvf"}')
WRONG_TYPES = {
    "ts_ns a string": BIND % ('"abc"', '"0000:01:10.0"'),
    "ts_ns null": BIND % ("null", '"0000:01:10.0"'),
    "ts_ns a list": BIND % ("[]", '"0000:01:10.0"'),
    "ts_ns an object": BIND % ("{}", '"0000:01:10.0"'),
    "bdf a number": BIND % ("1795791171110760701", "123"),
    "header schema null": '{"kind":"header","schema":null,"hostname":"h"}',
}


@pytest.mark.parametrize("name", sorted(WRONG_TYPES))
def test_a_field_of_the_wrong_type_is_a_value_error_and_a_counted_bad_line(name: str) -> None:
    """The typed decoder refuses the record (ValueError) and a journal reader counts the line."""
    line = WRONG_TYPES[name].encode() + b"\n"
    with pytest.raises(ValueError):
        codec.loads(line)
    st = codec.ReadStats()
    assert list(codec.iter_records([line], st)) == []
    assert st.bad_lines == 1 and st.first_bad.startswith("line 1: ")


def test_postmortem_of_a_journal_with_wrong_types_reports_them_as_bad_lines(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`vfiowatch postmortem` of a real journal with the six lines inserted: the report comes out,
    the six are counted as bad lines with the first named, and every good event is replayed."""
    lines = JOURNAL.read_bytes().splitlines(keepends=True)
    bad = [WRONG_TYPES[k].encode() + b"\n" for k in sorted(WRONG_TYPES)]
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(b"".join(lines[:3] + bad + lines[3:]))
    code = main(["postmortem", "--format", "json", str(journal)])
    out = capsys.readouterr()
    doc = json.loads(out.out)
    inp = doc["inputs"][0]
    assert code == doc["exit_status"] and "Traceback" not in out.err
    assert inp["bad_lines"] == len(WRONG_TYPES) and inp["first_bad"].startswith("line 4: ")
    assert inp["events"] == len(lines) - 1  # every good record but the header
    assert doc["findings"], "the scenario's finding is still raised from the good lines"
