"""Lab tier fixtures: build the guest once per session and boot scenarios in it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.lab import labbuild, labvm


@pytest.fixture(scope="session")
def lab_guest(require_root: None) -> labbuild.Guest:
    """The built guest (root file system cached under .cache/lab, image rebuilt per session);
    building it installs QEMU and makes a root file system, hence root."""
    try:
        return labbuild.build()
    except labbuild.LabBuildError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def boot_scenario(lab_guest: labbuild.Guest) -> Callable[[str], labvm.Boot]:
    """Boots a guest scenario once per session (cached by name) and returns what came back."""
    done: dict[str, labvm.Boot] = {}

    def boot(name: str) -> labvm.Boot:
        if name not in done:
            res = labvm.boot(lab_guest, name, labbuild.DEFAULT_CACHE / "runs" / name,
                             timeout=1800)
            if res.stalled and not res.failure:
                # A hung TCG guest (an RCU stall whose timer never fires) says nothing about
                # the agent: boot it once more, and fail only if it hangs again. (A guest
                # kernel that panicked, `failure`, would only panic again.)
                print(f"lab: scenario {name} hung after {res.seconds:.0f}s; booting it again")
                res = labvm.boot(lab_guest, name, labbuild.DEFAULT_CACHE / "runs" / name,
                                 timeout=1800)
            print(f"lab: scenario {name} took {res.seconds:.1f}s ({res.status.strip()})")
            if res.failure:  # the guest died or never ran the scenario: say so, not a timeout
                pytest.fail(res.explain(), pytrace=False)
            if not res.ok:
                err = res.payloads.get("error", b"").decode()
                pytest.fail(f"scenario {name} failed: {res.status!r}\n{err}\n"
                            f"console tail:\n{res.console[-3000:]}")
            done[name] = res
        return done[name]

    return boot
