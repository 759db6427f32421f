"""Every registered importer, through the whole postmortem (sniff, read, parse, replay, report),
on real samples made hostile: wrong types, deep nesting, huge lines, NUL, CRLF, non-UTF-8, cut
and gzip. No exception escapes, each file is done within a time bound, and a bad line is named
by its number."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from diag import postmortem as pm
from diag.importers import IMPORTERS, sniff
from diag.postmortem.output import render_json, render_markdown, render_text
from diag.sinks.logs import LogSink
from tests.conftest import FIXTURES, vfiowatch_bin

MAX_SECONDS = 10.0
"""The bound per file (the samples are at most 64 KiB, one huge line 2 MiB; typical: 0.1 s)."""
WRONG = [None, [], {}, "abc", -1, 1e308, True, "\x00\x1b[2J", "9" * 40, [[[[[]]]]]]


def _samples() -> dict[str, bytes]:
    """One real file per importer (its first 64 KiB), found by sniffing the fixtures; the
    snapshot is made by the real command."""
    out: dict[str, bytes] = {}
    paths = [*sorted(FIXTURES.glob("postmortem*/**/*")), *sorted(FIXTURES.glob("kata/**/*")),
             *sorted(FIXTURES.glob("journals/*.jsonl"))]
    for p in paths:
        if p.is_file() and p.suffix not in (".md", ".py") and p.stat().st_size < 400_000:
            imp, _ = sniff(str(p))
            if imp is not None and imp.name not in out:
                out[imp.name] = p.read_bytes()[:65536]
    snap = subprocess.run([vfiowatch_bin(), "--root", str(FIXTURES / "sysfs" / "sriov-lab"),
                           "snapshot", "--format", "json"], capture_output=True, check=True)
    out["snapshot"] = snap.stdout
    # The agent's own JSON logs, as the real log sink writes the demo's events and findings.
    from tests.unit.postmortem.test_pm_agent_logs import demo_story

    buf = io.StringIO()
    sink = LogSink(stream=buf, log_events=True)
    for r in demo_story():
        sink.write(r)
    out["agent-logs"] = buf.getvalue().encode()
    return out


SAMPLES = _samples()


def test_every_importer_has_a_sample_to_fuzz() -> None:
    """A new importer is fuzzed as soon as a fixture of its format exists (and must have one)."""
    assert sorted(SAMPLES) == sorted(IMPORTERS.load())


def _wrong_types(line: bytes, data: st.DataObject) -> bytes:
    """A JSON line with one field's value replaced by a value of another type."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    if not isinstance(rec, dict) or not rec:
        return line
    key = data.draw(st.sampled_from(sorted(rec)))
    rec[key] = data.draw(st.sampled_from(WRONG))
    return json.dumps(rec).encode()


def _hostile(sample: bytes, data: st.DataObject, name: str) -> bytes:
    lines = sample.split(b"\n")
    out: list[bytes] = []
    for line in lines:
        op = data.draw(st.integers(0, 11))
        if op == 0:
            out.append(_wrong_types(line, data))
        elif op == 1:
            out.append(line[: data.draw(st.integers(0, len(line)))])
        elif op == 2:
            pos = data.draw(st.integers(0, len(line)))
            junk = data.draw(st.sampled_from([b"\x00", b"\xff\xfe", b"\xc3", b"\r", b"\x1b[2J",
                                              b'"', b"[", b"{", b"=", b"\\"]))
            out.append(line[:pos] + junk + line[pos:])
        elif op == 3:
            out.append(line + b"\r")
        else:
            out.append(line)
    extra = data.draw(st.integers(0, 6))
    if extra == 1:
        out.insert(data.draw(st.integers(0, len(out))), b"x" * (2 << 20))  # one 2 MiB line
    elif extra == 2:
        out.append(b"[" * 20_000 + b"]" * 20_000)  # deep JSON/TOML arrays
    elif extra == 3:
        out.append(b"[" + b".".join([b"a"] * 5000) + b"]")  # a deep TOML table
    elif extra == 4:
        out.append(b'{"a":' * 5000 + b"1" + b"}" * 5000)
    elif extra == 5:  # blank padding in the head the sniffers see (regex backtracking)
        out[1:1] = [b" " * 79] * 400
    return b"\n".join(out)


def _in_child(fn: Callable[[], None], seconds: float, what: str) -> None:
    """Run `fn` in a forked child and fail, not hang, when it runs past `seconds` (a runaway
    regex holds the interpreter: no signal or thread can stop it in-process); an exception in
    the child fails the test with its traceback."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        os.close(r)
        code = 0
        try:
            fn()
        except BaseException:
            os.write(w, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(w)
    deadline = time.monotonic() + seconds
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"{what}: still running after {seconds} s")
            time.sleep(0.005)
        with os.fdopen(r, "rb") as fh:
            err = fh.read().decode(errors="replace")
        r = -1
        assert os.waitstatus_to_exitcode(status) == 0, f"{what}:\n{err}"
    finally:
        if r >= 0:
            os.close(r)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: a hang
# costs the bound at each step; the draws printed name the file well enough
@given(st.data())
def test_hostile_files_of_every_format_never_raise_and_stay_bounded(data: st.DataObject) -> None:
    """A hostile file of any importer's format (plain, gzip, or gzip cut): the report is made
    and rendered in every format within the bound, and a malformed line is named by number."""
    name = data.draw(st.sampled_from(sorted(SAMPLES)))
    blob = _hostile(SAMPLES[name], data, name)
    packing = data.draw(st.sampled_from(["plain", "gzip", "cut gzip"]))
    if packing != "plain":
        blob = gzip.compress(blob)
        if packing == "cut gzip":
            blob = blob[: max(10, len(blob) * 2 // 3)]
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"input-{name}"
        f.write_bytes(blob)

        def check() -> None:
            rep = pm.run([str(f)], pm.Options())
            render_text(rep), render_json(rep), render_markdown(rep)
            (inp,) = rep.inputs
            if inp.stats.bad_lines:
                assert inp.stats.first_bad.startswith("line "), inp.stats.first_bad

        _in_child(check, MAX_SECONDS, f"{name}, {packing}")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_sample_is_read_by_its_own_importer(name: str, tmp_path: Path) -> None:
    """The fuzzing starts from files each importer really claims (else it fuzzes the fallback)."""
    f = tmp_path / "sample"
    f.write_bytes(SAMPLES[name])
    imp, err = sniff(str(f))
    assert err == "" and imp is not None and imp.name == name
