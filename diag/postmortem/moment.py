"""Provides the end of the inputs as a moment: when state listings were taken, and what that says.

A state listing (`lspci -k`, a snapshot) taken after the events closes the story: the drivers it
shows are the state at its time. The user can say when it was taken (`PATH@end`, `PATH@TIME`);
else an untimed listing whose drivers agree with the end of the events was taken after them,
and inputs with no time at all were pasted after the incident. Conditions with a grace period
(stranded, stuck, netdev lost) are then judged at that later moment; the report says which it
assumed.
"""

from __future__ import annotations

from diag import events as ev
from diag.core.state import HostState
from diag.postmortem.inputs import Input


def place_listings(inputs: list[Input]) -> list[str]:
    """Put each listing given as `PATH@end` after the last event of the other inputs; a clock
    note for every listing with a time given."""
    last_stamps = [i.events[-1].ts_ns for i in inputs if i.parsed is not None
                   and i.clock != "static" and i.events]
    notes = []
    for i in inputs:
        if i.at == "end" and i.clock == "static":
            i.at_ns = (max(last_stamps) + 1) if last_stamps else None
        if i.at_ns is not None:
            when = "at the end of the other inputs" if i.at == "end" else f"at {i.at}"
            notes.append(f"{i.path}: taken {when} (as given): its drivers are the state at that "
                         "moment")
    return notes


def _moved(state: HostState | None) -> dict[str, str | None]:
    """BDF -> driver at the end, for the devices whose driver the events set (the others'
    drivers are unknown to the replay: an untimed listing gives only who they are)."""
    return {d.device.bdf: d.driver for d in (state.devices if state else ())
            if d.since_ns is not None}


def _agrees(end: str | None, listed: str | None) -> bool:
    """A listed driver agrees with the replay's end: the same, or any driver where the events
    said a driver was bound without naming it (`udevadm monitor` without --property)."""
    return end == listed or (end == "" and bool(listed))


def _untimed_listings(inputs: list[Input]) -> list[tuple[Input, ev.InventoryObserved]]:
    return [(i, e) for i in inputs if i.clock == "static" and i.at_ns is None
            for e in i.events or () if isinstance(e, ev.InventoryObserved)]


def end_is_later(inputs: list[Input], state: HostState) -> str:
    """Why the end of the inputs is later than their last event ('' when it is not known to be):
    an untimed listing whose drivers agree with the end of the events was taken after them; an
    incident known only from lines without time was pasted after it."""
    end = _moved(state)
    for inp, e in _untimed_listings(inputs):
        listed = {d.bdf: d.driver for d in e.devices if d.bdf in end}
        if listed and all(_agrees(end[b], drv) for b, drv in listed.items()):
            return (f"the end of the inputs: {inp.path} (no time) agrees with the last "
                    "events, so it was taken after them (assumed)")
    timed = [i for i in inputs if i.parsed is not None and i.clock not in ("static", "none")
             and i.events]
    untimed = [i for i in inputs if i.parsed is not None and i.clock == "none" and i.events]
    if untimed and not timed:
        return ("the end of the inputs: no line has a time; they were pasted after the "
                "incident, at a moment they do not say (assumed later)")
    return ""


def listing_notes(inputs: list[Input], state: HostState | None) -> list[str]:
    """Compare untimed listings' drivers with the replay's end (they were taken some time)."""
    notes: list[str] = []
    end = _moved(state)
    for inp, e in _untimed_listings(inputs):
        notes.append(f"{inp.path}: a listing with no time: its devices' identities (ids, "
                     "PF/VF, IOMMU groups) are used from the start, its drivers are not")
        differ = [f"{d.bdf} {d.driver or '(none)'} (replay ends with {end[d.bdf] or '(none)'})"
                  for d in e.devices if d.bdf in end and not _agrees(end[d.bdf], d.driver)]
        if differ:
            notes.append(f"{inp.path}: drivers differ from the end of the replay, so it was "
                         "not taken at the end: " + "; ".join(differ[:8])
                         + (f"; … {len(differ) - 8} more" if len(differ) > 8 else ""))
    return notes
