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


def test_every_rule_has_a_short_title_in_both_tenses() -> None:
    """Each registered rule has a title (what happened, a few words) for the dashboard's finding
    row, logs and postmortem; the resolved one is told in the past tense."""
    from diag.core.rules import RULES

    rules = sorted(RULES.load())
    assert [r for r in rules if r not in render.RULE_TITLES] == []
    for rule in rules:
        now, then = render.RULE_TITLES[rule]
        assert 0 < len(now) <= 50 and 0 < len(then) <= 56, rule
    assert render.rule_title("vfio-bind-coldplug-disabled") == \
        "moved to vfio-pci while cold plug is disabled"
    assert "was" in render.rule_title("vfio-bind-coldplug-disabled", resolved=True)


def test_a_resolved_finding_tells_its_story_in_the_past_without_a_remedy() -> None:
    """Ongoing: QEMU *will* fail and the remedy is offered; resolved: it *would have* failed,
    the end is told, and no remedy is offered for what is over."""
    from diag.events import replace

    f = ev.Finding(ts_ns=1, source="core", finding_id="x", rule="vfio-bind-coldplug-disabled",
                   severity=ev.Severity.CRITICAL, summary="s", bdf="0000:01:10.0",
                   first_ns=1, last_ns=1, remedy="set root-port",
                   actor=ev.Process(pid=195, comm="containerd-shim", sandbox_id="015f" * 16),
                   pod="sriov-pod", pod_namespace="default",
                   labels=(("from_driver", "igbvf"), ("cold_plug_vfio", "no-port"),
                           ("predicted_error", "Bus 'x' not found")))
    rows = dict(render.finding_story(f))
    assert rows["QEMU"].startswith("will fail") and rows["what to do"] == "set root-port"
    assert rows["pod"].startswith("default/sriov-pod")
    assert rows["who"].startswith("containerd-shim[195]")
    done = dict(render.finding_story(replace(f, status="resolved", resolved_ns=2,
                                             resolved_reason="returned to host driver igbvf")))
    assert done["QEMU"].startswith("would have failed")
    assert "what to do" not in done and "returned to host driver igbvf" in done["ended"]
    assert render.finding_title(replace(f, status="resolved")).startswith("was moved")


def test_a_finding_about_no_device_says_what_happened_without_a_placeholder() -> None:
    """A Kata line about a sandbox, not a device (QEMU exited): the story starts with what
    happened, not with `-:` standing for the missing device."""
    f = ev.Finding(ts_ns=1, source="core", finding_id="y", rule="kata-known-error",
                   severity=ev.Severity.ERROR, summary="s", first_ns=1, last_ns=1,
                   labels=(("signature", "qemu-exited-error"),))
    what = dict(render.finding_story(f))["what happened"]
    assert what.startswith(render.finding_title(f)), what


def test_an_exposure_finding_is_titled_with_its_issue() -> None:
    """The dashboard row of a kata-vfio-exposure finding names the Kata issue, in the past once
    a drop-in or an upgrade resolved it."""
    from diag.events import replace

    f = ev.Finding(ts_ns=1, source="core", finding_id="z", rule="kata-vfio-exposure",
                   severity=ev.Severity.ERROR, summary="s", first_ns=1, last_ns=1,
                   labels=(("handler", "kata"), ("issue", "10162")))
    assert render.finding_title(f) == "Kata is exposed to #10162"
    assert render.finding_title(replace(f, status="resolved")) == "Kata was exposed to #10162"
