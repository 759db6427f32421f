"""`vfiowatch run` argument handling: sizes, addresses, bad configuration and unknown sources."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from diag import cli
from diag.commands.run import parse_size


@pytest.mark.parametrize(("text", "n"), [("65536", 65536), ("64K", 65536), ("64M", 64 << 20),
                                         ("1G", 1 << 30), ("1.5M", 3 << 19), ("16KiB", 16384)])
def test_sizes_take_binary_suffixes(text: str, n: int) -> None:
    """--journal-max-bytes accepts plain bytes and K/M/G (KiB, MiB) suffixes."""
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "lots", "1K"])
def test_bad_or_tiny_sizes_are_refused(text: str) -> None:
    """Garbage, and anything under 4K (a part must hold its header and state), is refused."""
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_a_bad_config_file_exits_2_with_a_titled_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TOML syntax error names the file; nothing starts."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[core\nflapping_moves = 3\n")
    rc = cli.main(["run", "--no-journal", "--config", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("Configuration error:") and str(bad) in err


def test_an_unknown_core_key_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`[core] no_such_key` is refused with the list of known keys."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[core]\nno_such_key = 1\n")
    assert cli.main(["run", "--no-journal", "--config", str(cfg)]) == 2
    assert "core.no_such_key" in capsys.readouterr().err


def test_an_unknown_source_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--sources with a name no module registers exits 2 and lists the known sources."""
    assert cli.main(["run", "--no-journal", "--sources", "uevent,nosuch"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "uevent" in err


def test_python_logging_records_become_json_lines() -> None:
    """A source crash logged by the runtime through `logging` is one JSON line with its traceback."""
    import io
    import json
    import logging

    from diag.commands.run import _ToStructlog
    from diag.sinks.logs import LogSink

    out = io.StringIO()
    logger = logging.getLogger("vfiowatch.test")
    logger.propagate = False
    logger.addHandler(_ToStructlog(LogSink(stream=out).log))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("source %s crashed", "links")
    doc = json.loads(out.getvalue())
    assert (doc["event"], doc["level"], doc["logger"]) == ("python_log", "error", "vfiowatch.test")
    assert doc["message"] == "source links crashed" and "RuntimeError: boom" in doc["exception"]
