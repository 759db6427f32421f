"""The runtime with both live sources on the real kernel: health, time order, snapshots, stop."""

from __future__ import annotations

import itertools
import time

import pytest

from diag import events as ev
from diag.core.correlator import Correlator
from diag.core.state import HostState
from diag.runtime import Pipeline, build_sources
from diag.sources import SourceContext
from diag.testing import Collector, wait_for
from tests.kernel.vw_kernel_helpers import cleanup_netns, new_uuid, prefix, sh, storm_device

pytestmark = pytest.mark.usefixtures("require_root")


def test_uevents_and_links_reach_the_sinks_in_time_order_and_stop_is_quick() -> None:
    """uevent + links under one Pipeline: both report up, a synthetic uevent and a veth in a
    namespace arrive in ts order with the inventory first, LiveFeed shows the link, and stop
    drains and returns within 2 s."""
    sources, unavailable = build_sources(SourceContext(), ["uevent", "links"])
    assert [s.name for s in sources] == ["uevent", "links"] and not unavailable
    p = Pipeline(sources, correlator=Correlator(rules=[]))
    items = Collector()
    p.on_item(items)
    feed = p.live_feed(owns_pipeline=True)
    states: list[HostState] = []
    feed.subscribe(states.append)
    pfx = prefix()
    tag = new_uuid()
    bdf = storm_device()
    with cleanup_netns(pfx):
        feed.start()
        try:
            assert wait_for(lambda: sum(isinstance(e, ev.SourceStateChanged) and e.up
                                        for e in items.snapshot()) == 2)
            sh(f"ip netns add {pfx}n")
            assert wait_for(lambda: any(isinstance(e, ev.NetnsAdded) and e.netns.name == f"{pfx}n"
                                        for e in items.snapshot()), timeout=2)
            sh(f"ip -n {pfx}n link add {pfx}a type veth peer name {pfx}b")
            with open(f"/sys/bus/pci/devices/{bdf}/uevent", "w") as fh:
                fh.write(f"change {tag}")
            sh(f"ip -n {pfx}n link set {pfx}a up")
            assert wait_for(lambda: any(
                isinstance(e, ev.DeviceChanged) and e.synthetic and e.bdf == bdf
                for e in items.snapshot()))
            assert wait_for(lambda: any(
                any(v.ifname == f"{pfx}a" and v.admin_up for v in s.links) for s in list(states)),
                timeout=3)
        finally:
            t0 = time.monotonic()
            feed.stop()
            took = time.monotonic() - t0
    assert took < 2.0
    got = items.snapshot()
    payload = [e for e in got if e.source != "runtime"]
    # In time order, except events that arrived after their window closed (counted as late).
    inversions = sum(a.ts_ns > b.ts_ns for a, b in itertools.pairwise(payload))
    assert inversions <= p.stats.late
    assert isinstance(next(e for e in got if e.source == "uevent"), ev.InventoryObserved)
    downs = [e for e in got if isinstance(e, ev.SourceStateChanged) and not e.up]
    assert {e.name for e in downs} == {"uevent", "links"} and all(e.reason == "stopped" for e in downs)
    assert p.stats.dropped == 0 and not p.running


def test_the_dashboards_feed_starts_the_other_sources_after_its_first_frame() -> None:
    """`vfiowatch tui`'s feed runs the uevent source alone (the device list: what the first
    frame waits for) until the dashboard says that frame is painted; then it starts the others
    (the Kata source's modules, bcc's import and compile), which report in the same feed."""
    from diag.commands.tui import _BackgroundLiveFeed
    from diag.common.paths import HostPaths

    feed = _BackgroundLiveFeed(HostPaths.at("/"), rest_after_s=60)
    states: list[HostState] = []
    feed.subscribe(states.append)

    def reported() -> set[str]:
        return {h.name for h in states[-1].sources} if states else set()

    feed.start()
    try:
        assert wait_for(lambda: bool(states) and bool(states[-1].devices)
                        and any(h.name == "uevent" and h.up for h in states[-1].sources), 20)
        time.sleep(0.5)
        assert reported() - {"runtime"} == {"uevent"}
        feed.first_frame_shown()
        assert wait_for(lambda: {"uevent", "links", "kata", "ebpf"} <= reported(), 20), reported()
        assert feed.error is None
    finally:
        feed.stop()
