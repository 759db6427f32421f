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


def test_kata_write_lines_from_a_followed_log_are_writes_attributed_to_the_shim(tmp_path: Path) -> None:
    """Live (issue 17): a followed log's `Write vfio-pci to driver_override` line becomes the
    write it announces (mode kata-log, the shim's pid and sandbox as actor), as an eBPF record
    would be; a failure line stays a matched line."""
    from diag.sources.kata.source import KataWatcher

    log = tmp_path / "containerd.log"
    sid = "ab" * 32
    log.write_text(
        f'time="2026-11-27T14:52:52.0Z" level=info msg="Write vfio-pci to driver_override" '
        f'device-bdf="0000:01:10.0" name=containerd-shim-v2 pid=3131 sandbox={sid} '
        'source=virtcontainers subsystem=device\n'
        f'time="2026-11-27T14:52:53.0Z" level=error msg="Cannot start VM" pid=3131 sandbox={sid}\n')
    w = KataWatcher(HostPaths.at(tmp_path), {"log_files": [str(log)], "logs_from_start": True,
                                             "journal": False, "kmsg": False})
    got = w.step_logs(0)
    write = next(e for e in got if isinstance(e, ev.SysfsWriteObserved))
    assert (write.mode, write.control, write.value, write.actor.pid, write.actor.sandbox_id) == (
        "kata-log", "driver_override", "vfio-pci", 3131, sid)
    assert any(isinstance(e, ev.LogLineMatched) and e.signature == "cannot-start-vm" for e in got)


def test_a_slow_round_does_not_hold_the_merge_and_its_events_come_after_the_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """In event mode a round that takes long (re-reading Kata, placing watches: 150 ms in the
    lab's emulated guest) leaves the watermark at the clock, so the merge does not hold other
    sources' events behind it (issue 19 item 3: the lab's bind uevent waited for the round);
    the round's events are stamped after the round, not at its start."""
    from diag.sources.kata.source import KataWatcher

    factory = SOURCES.load()["kata"]
    src = factory(SourceContext(paths=HostPaths.at(FIX / "go-physical"),
                                options={"journal": False, "kmsg": False, "exposure_interval_s": 0.3}))
    in_round = threading.Event()
    round_started: list[int] = []
    original = KataWatcher.feed_round

    def slow_round(self: KataWatcher, ts_ns: int, mono: float, ready: set[int] | None = None) -> list[ev.Event]:
        round_started.append(time.time_ns())
        in_round.set()
        time.sleep(0.4)
        out = original(self, ts_ns, mono, ready)
        in_round.clear()
        return [*out, ev.EventsLost(ts_ns=ts_ns, source="kata", lost_source="kata", count=0, reason="test")]

    monkeypatch.setattr(KataWatcher, "feed_round", slow_round)
    got: list[ev.Event] = []
    stop = threading.Event()
    th = threading.Thread(target=src.run, args=(got.append, stop))
    th.start()
    try:
        if not in_round.wait(10):
            pytest.skip("this host gives the kata source no event mode (inotify and process events refused)")
        time.sleep(0.2)  # half way through the round
        now = time.time_ns()
        lag_ms = (now - src.watermark.value(now)) / 1e6
        end = time.monotonic() + 5
        while not any(isinstance(e, ev.EventsLost) for e in got) and time.monotonic() < end:
            time.sleep(0.02)
    finally:
        stop.set()
        th.join(5)
    assert lag_ms < 50, f"the watermark stayed {lag_ms:.0f} ms behind the clock during the round"
    lost = next(e for e in got if isinstance(e, ev.EventsLost))
    assert lost.ts_ns >= round_started[0] + 400_000_000  # stamped when emitted, after the round
