"""One renderer per event kind: every kind has its own, and each view uses it."""

from __future__ import annotations

from diag import events as ev
from diag import render


def test_every_event_kind_has_its_own_renderer() -> None:
    """A kind in the catalogue without a renderer (or a renderer for no kind) fails here, so a
    new event never falls through to the generic words silently."""
    missing = sorted(k for k, cls in ev.EVENT_TYPES.items() if cls not in render.RENDERERS)
    assert missing == []
    assert set(render.RENDERERS) == set(ev.EVENT_TYPES.values())


def test_every_view_asks_the_kinds_renderer() -> None:
    """Evidence, timeline, stream and log fields of one event all come from its renderer."""
    e = ev.DeviceBound(ts_ns=1, source="uevent", bdf="0000:01:10.0", driver="vfio-pci",
                       previous_driver="igbvf", synthetic=True)
    assert render.evidence(e) == "0000:01:10.0 bound to vfio-pci (was igbvf) [synthetic]"
    assert render.timeline(e) == "0000:01:10.0 bound to vfio-pci (from igbvf)"
    assert render.stream(e) == "0000:01:10.0 bound to vfio-pci (was igbvf)"
    assert render.fields(e) == {"bdf": "0000:01:10.0", "driver": "vfio-pci",
                                "previous_driver": "igbvf"}
    assert render.fields(ev.ClockTicked(ts_ns=1, source="replay")) is None
