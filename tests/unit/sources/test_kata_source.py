"""The registered `kata` source: its thread emits state, configuration and sandboxes, and stops promptly."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.errors import ConfigError
from diag.common.paths import HostPaths
from diag.sources import SOURCES, SourceContext

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "kata"


def test_registered_and_runs_on_a_fixture_root() -> None:
    """`kata` is in the registry; run() emits its state, config and sandbox, and returns soon after stop."""
    factory = SOURCES.load()["kata"]
    src = factory(SourceContext(paths=HostPaths.at(FIX / "go-physical"), options={"journal": False}))
    assert src.probe().ok
    got: list[ev.Event] = []
    stop = threading.Event()
    th = threading.Thread(target=src.run, args=(got.append, stop))
    th.start()
    end = time.monotonic() + 10
    while not any(e.kind == "sandbox_started" for e in got) and time.monotonic() < end:
        time.sleep(0.02)
    stop.set()
    t = time.monotonic()
    th.join(5)
    assert not th.is_alive() and time.monotonic() - t < 2
    kinds = [e.kind for e in got]
    assert kinds[0] == "source_state_changed" and got[0].up
    assert got[0].mode in ("events+no-logs", "inotify+poll+no-logs")  # the host says which
    assert "kata_config_loaded" in kinds and "sandbox_started" in kinds


def test_probe_says_when_kata_is_absent() -> None:
    """probe() is ok without Kata and says the built-in default is assumed."""
    factory = SOURCES.load()["kata"]
    a = factory(SourceContext(paths=HostPaths.at(FIX / "no-kata"))).probe()
    assert a.ok and a.mode == "assumed" and "cold_plug_vfio = no-port" in a.reason


def test_unknown_option_names_the_known_ones() -> None:
    """A misspelt option is a ConfigError listing what [sources.kata] takes."""
    factory = SOURCES.load()["kata"]
    with pytest.raises(ConfigError) as exc:
        factory(SourceContext(options={"log_file": ["/x"]}))
    assert "log_files" in exc.value.hint
