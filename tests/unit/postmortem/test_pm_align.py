"""Clock alignment: journald anchors, event matching and untimed placement say how sure they are."""

from __future__ import annotations

from diag import events as ev
from diag.importers import Anchor
from diag.postmortem import align as al

S = 1_000_000_000


def test_anchors_of_one_boot_give_its_offset_with_the_spread_as_uncertainty() -> None:
    """realtime - monotonic over one boot's entries: the median, ± the spread (an NTP step)."""
    anchors = [Anchor("b1", 1000 * S + m, m) for m in (1, 2, 3)] + [Anchor("b1", 1000 * S + 5 + 2_000_000, 5)]
    a, why = al.from_anchors(anchors)
    assert a is not None and why == "" and a.offset_ns == 1000 * S and a.uncertainty_ns == 2_000_000


def test_several_boots_are_not_guessed_unless_the_agent_journal_names_one() -> None:
    """Two boots: no alignment; with the agent journal's boot id, that boot is used and said."""
    anchors = [Anchor("b1", 100 * S, 1 * S), Anchor("b2", 500 * S, 2 * S)]
    a, why = al.from_anchors(anchors)
    assert a is None and "2 boots" in why
    a, _ = al.from_anchors(anchors, prefer_boot="b2")
    assert a is not None and a.offset_ns == 498 * S and "agent's journal" in a.method


def _bound(ts: int, bdf: str = "0000:01:10.0") -> ev.DeviceBound:
    return ev.DeviceBound(ts_ns=ts, source="uevent", bdf=bdf, driver="vfio-pci")


def test_matching_finds_the_densest_cluster_and_needs_two_matches() -> None:
    """Matches agreeing within the cluster width win over a stray one; one match is not enough."""
    mono = al.anchor_keys([_bound(10 * S), _bound(20 * S, "0000:01:10.2"), _bound(30 * S)])
    real = al.anchor_keys([_bound(1010 * S + 1000), _bound(1020 * S + 3000, "0000:01:10.2"),
                           _bound(1030 * S + 2000), _bound(5000 * S)])
    a = al.match_offset(mono, real)
    assert a is not None and a.support == 3 and abs(a.offset_ns - 1000 * S) <= 3000
    assert a.uncertainty_ns is not None and a.uncertainty_ns <= 2000
    assert al.match_offset(mono[:1], real[:1]) is None


def test_untimed_messages_take_matched_times_and_the_gap_as_uncertainty() -> None:
    """Matched messages get their counterpart's time; the ones between are spread, ± the gap."""
    host = ev.NetnsRef(inode=0, is_host=True)
    untimed = [ev.LinkRemoved(ts_ns=1, source="links", ifindex=3, ifname="eth1", netns=host),
               ev.LinkChanged(ts_ns=2, source="links", ifindex=2, ifname="eth0", netns=host),
               ev.LinkChanged(ts_ns=3, source="links", ifindex=2, ifname="eth0", netns=host,
                              operstate="UP"),
               ev.LinkRemoved(ts_ns=4, source="links", ifindex=4, ifname="eth2", netns=host)]
    ref = al.anchor_keys([
        ev.NetdevRemoved(ts_ns=100 * S, source="uevent", bdf="a", ifname="eth1"),
        ev.NetdevRemoved(ts_ns=104 * S, source="uevent", bdf="b", ifname="eth2")])
    stamps, uncs, matched = al.place_untimed(al.anchor_keys(untimed), ref, 4)
    assert matched == 2 and stamps[0] == 100 * S and stamps[3] == 104 * S
    assert 100 * S < stamps[1] < stamps[2] < 104 * S and uncs[1] == uncs[2] == 4 * S
    none = al.place_untimed(al.anchor_keys(untimed), [], 4)
    assert none == ([1, 2, 3, 4], [-1, -1, -1, -1], 0)
