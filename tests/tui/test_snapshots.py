"""SVG snapshot tests: the dashboard over the frozen lab journal, at fixed sizes, pixel-stable.

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and review the SVG diffs (they open in a browser).
"""

from __future__ import annotations

from textual.pilot import Pilot

from diag.tui.widgets import DevicesTable
from tests.tui.snapshot_app import make_app

VF = "0000:01:10.0"


class TestMain:
    def test_incident_80x24(self, snap_compare) -> None:
        """The smallest supported terminal right after the VF moved to vfio-pci."""
        assert snap_compare(make_app(), terminal_size=(80, 24))

    def test_incident_wide_160x45(self, snap_compare) -> None:
        """A big terminal: devices and findings side by side, the stream below, wide columns."""
        assert snap_compare(make_app(), terminal_size=(160, 45))

    def test_after_restore_120x36(self, snap_compare) -> None:
        """At the end of the journal: the VF back on igbvf, the findings resolved."""
        assert snap_compare(make_app(position=10_000), terminal_size=(120, 36))

    def test_findings_only(self, snap_compare) -> None:
        """`f`: only the findings, severity-coloured."""
        assert snap_compare(make_app(), press=["f"], terminal_size=(100, 30))

    def test_filter_typed(self, snap_compare) -> None:
        """`/` then a query: the filter box at the bottom."""
        assert snap_compare(make_app(), press=["slash", *"kind:bound"], terminal_size=(100, 30))

    def test_filter_applied(self, snap_compare) -> None:
        """A device filter applied: the stream shows that device only, the title says so."""
        assert snap_compare(make_app(), press=["slash", *"dev:01:10.0", "enter"],
                            terminal_size=(100, 30))


class TestScreens:
    def test_device_story(self, snap_compare) -> None:
        """Enter on the VF: driver timeline with the shim as actor, links, sandbox, findings."""

        async def run_before(pilot: Pilot[None]) -> None:
            await pilot.pause()  # the first snapshot lands
            table = pilot.app.query_one(DevicesTable)
            table.move_cursor(row=table._order.index(VF))  # the VF under its PF
            await pilot.press("enter")  # open its story

        assert snap_compare(make_app(), run_before=run_before, terminal_size=(110, 50))

    def test_finding_detail(self, snap_compare) -> None:
        """Enter on the critical finding: evidence, explanation, remedy."""

        async def run_before(pilot: Pilot[None]) -> None:
            await pilot.pause()  # the first snapshot lands
            await pilot.press("tab")  # devices -> findings
            await pilot.press("enter")  # the first (critical) finding

        assert snap_compare(make_app(), run_before=run_before, terminal_size=(100, 30))

    def test_help(self, snap_compare) -> None:
        """`?`: the keys."""
        assert snap_compare(make_app(), press=["question_mark"], terminal_size=(100, 30))
