"""Privileges are judged by the effective capability set: real dropped capabilities, a real ordinary user.

`setpriv` (util-linux) starts `vfiowatch` as root with CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON and
CAP_NET_ADMIN out of its bounding set (so out of its effective set), or as uid 65534; what
`check` and `run` say is compared with what the kernel then really allows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, vfiowatch_bin

pytestmark = pytest.mark.usefixtures("require_root")

DROPPED = ("sys_admin", "bpf", "perfmon", "net_admin")
NOBODY = 65534


def _setpriv() -> str:
    exe = shutil.which("setpriv")
    if exe is None:
        pytest.skip("setpriv (util-linux, deploy/packages.txt test group) is not installed")
    return exe


def _dropped(*args: str) -> list[str]:
    spec = ",".join(f"-{c}" for c in DROPPED)
    return [_setpriv(), f"--inh-caps={spec}", f"--bounding-set={spec}", vfiowatch_bin(), *args]


def _as_nobody(*args: str) -> list[str]:
    cmd = [_setpriv(), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = subprocess.run([*cmd, str(Path(vfiowatch_bin()).parent / "python"), "-c",
                            "import diag"], capture_output=True, text=True, cwd="/", timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"uid {NOBODY} cannot run this checkout's venv ({REPO} not reachable?): "
                    f"{probe.stderr.strip()[-200:]}")
    return [*cmd, vfiowatch_bin(), *args]


def _check(cmd: list[str]) -> dict[str, dict[str, object]]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
    assert res.returncode in (0, 1), res.stderr
    assert "Traceback" not in res.stderr
    doc = json.loads(res.stdout)
    return {str(c["name"]): c for c in doc["checks"]}


def _cap_eff(cmd_prefix: list[str]) -> int:
    out = subprocess.run([*cmd_prefix, "grep", "CapEff", "/proc/self/status"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[1], 16)


def test_check_with_capabilities_dropped_names_each_one_and_what_it_costs() -> None:
    """uid 0 without CAP_SYS_ADMIN/BPF/PERFMON/NET_ADMIN: `check` no longer says "all
    capabilities"; it names the four with the parts that need them, says eBPF is unavailable
    for want of CAP_BPF and CAP_PERFMON, and that the netlink buffers are capped."""
    spec = ",".join(f"-{c}" for c in DROPPED)
    eff = _cap_eff([_setpriv(), f"--inh-caps={spec}", f"--bounding-set={spec}"])
    assert not eff & (1 << 21 | 1 << 39 | 1 << 38 | 1 << 12), "setpriv did not drop them"
    by = _check(_dropped("check", "--format", "json"))
    priv = by["privileges"]
    assert not priv["ok"]
    detail = str(priv["detail"])
    assert "all capabilities" not in detail and detail.startswith("running as root without")
    for cap in ("CAP_SYS_ADMIN (links)", "CAP_BPF (ebpf)", "CAP_PERFMON (ebpf)",
                "CAP_NET_ADMIN (uevent, links)"):
        assert cap in detail
    assert "AmbientCapabilities=" in str(priv["fix"])
    mode = by["ebpf mode"]
    assert not mode["ok"] and "missing CAP_BPF, CAP_PERFMON" in str(mode["detail"])
    assert "capped by net.core.rmem_max" in str(by["uevent socket"]["detail"])
    assert not any("crashed" in str(c["detail"]) for c in by.values())


def test_check_as_an_ordinary_user_finishes_every_line_without_a_crash() -> None:
    """uid 65534: every check answers (no "check crashed"), privileges names the uid and what
    it lacks, and tracefs is "not readable", not "not mounted" (it is mounted here)."""
    by = _check(_as_nobody("check", "--format", "json"))
    assert not any("crashed" in str(c["detail"]) for c in by.values()), by
    assert str(by["privileges"]["detail"]).startswith(f"running as uid {NOBODY} without")
    if os.path.isdir("/sys/kernel/tracing/events"):
        assert "not readable by uid 65534" in str(by["tracefs"]["detail"])
    assert "missing CAP_BPF" in str(by["ebpf mode"]["detail"])


def _run_agent(cmd: list[str], tmp_path: Path, seconds: float) -> tuple[int, list[dict[str, object]]]:
    log = tmp_path / "agent.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd="/")
        try:
            time.sleep(seconds)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    return rc, [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_run_with_capabilities_dropped_never_reports_ebpf_up_and_nothing_crashes(
        tmp_path: Path) -> None:
    """`run` without the four capabilities for 8 s: the eBPF source is reported unavailable
    once with the missing capabilities (never up, never crashed and restarted), links follow
    the host's namespace only and say why, no traceback, exit 0."""
    rc, logs = _run_agent(_dropped("run", "--journal", str(tmp_path / "j.jsonl")), tmp_path, 8.0)
    assert rc == 0
    states = [e for e in logs if e.get("event") == "source_state_changed"]
    ebpf = [e for e in states if e.get("source") == "ebpf"]
    assert ebpf and not any(e.get("up") for e in ebpf), ebpf
    assert "missing CAP_BPF, CAP_PERFMON" in str(ebpf[0].get("reason"))
    assert not any("crashed" in str(e.get("reason")) for e in states), states
    links = next(e for e in states if e.get("source") == "links" and e.get("up"))
    assert links.get("mode") == "host-only" and "CAP_SYS_ADMIN" in str(links.get("reason"))


def test_run_as_an_ordinary_user_keeps_running_degraded(tmp_path: Path) -> None:
    """uid 65534 `run` for 6 s: the sources that can run do, eBPF says what it lacks, nothing
    crashes, SIGTERM stops it with status 0."""
    rc, logs = _run_agent(_as_nobody("run", "--no-journal"), tmp_path, 6.0)
    assert rc == 0
    states = [e for e in logs if e.get("event") == "source_state_changed"]
    assert any(e.get("source") == "uevent" and e.get("up") for e in states)
    assert not any("crashed" in str(e.get("reason")) for e in states), states
    assert any(e.get("event") == "agent_stopped" for e in logs)
