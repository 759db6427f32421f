"""`vfiowatch run` in the guest turns real VF moves by named actors into the expected findings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from diag import codec
from diag import events as ev
from diag.core.correlator import Correlator
from tests.lab import labvm
from tests.lab.guest import kata  # guest helper; stdlib only, safe to import on the host

VF0 = "0000:01:10.0"


@pytest.fixture(scope="module")
def agent_run(boot_scenario: Callable[[str], labvm.Boot]) -> labvm.Boot:
    """The `agent` scenario's results (an agent that cannot start fails the scenario)."""
    return boot_scenario("agent")


def needs(res: labvm.Boot, *sources: str) -> None:
    """Fails, naming what is missing, when the agent in the guest lacks a source this test
    needs: every source is part of the project, so its absence is a fault, never a skip."""
    have = set(res.payloads.get("sources.txt", b"").decode().strip().split(","))
    missing = [s for s in sources if s not in have]
    assert not missing, f"the agent in the guest has no {', '.join(missing)} source (has: {sorted(have)})"


def timeline_ns(res: labvm.Boot, n: int, text: str) -> int:
    """Wall-clock ns of the first timeline line of scenario n containing `text`."""
    for line in res.payloads.get(f"timeline-{n}.txt", b"").decode().splitlines():
        if text in line:
            return int(line.split(" ", 1)[0])
    raise AssertionError(f"timeline {n} has no {text!r}")


def journal(res: labvm.Boot, n: int) -> list[ev.Event]:
    """Scenario n's part of its agent's journal, decoded with the project's own codec (every
    line of the journal must decode)."""
    bounds = {int(a): (b, int(c), int(d)) for a, b, c, d in
              (line.split() for line in res.payloads.get("scenarios.txt", b"").decode().splitlines()
               if line.strip())}
    assert n in bounds, f"scenario {n} did not run{context(res, n)}"
    group, start, end = bounds[n]
    body = res.payloads.get(f"journal-g{group}.jsonl")
    assert body, f"agent {group} wrote no journal{context(res, n)}"
    out = []
    for line in body.splitlines():
        rec = codec.loads(line)
        if isinstance(rec, ev.Event) and start <= rec.ts_ns <= end:
            out.append(rec)
    return out


def findings(res: labvm.Boot, n: int, rule: str) -> list[ev.Finding]:
    return [e for e in journal(res, n) if isinstance(e, ev.Finding) and e.rule == rule]


def current(got: list[ev.Finding]) -> ev.Finding:
    """The first episode's state just before it resolved: its last open/updated record (the
    journal keeps every transition; attribution may arrive in an update)."""
    first = got[0].finding_id
    live = [f for f in got if f.finding_id == first and f.status != "resolved"]
    return live[-1]


def context(res: labvm.Boot, n: int) -> str:
    group = "1" if n == 6 else "2" if n in (7, 8) else "3" if n == 10 else "0"
    return ("\ntimeline:\n" + res.payloads.get(f"timeline-{n}.txt", b"").decode()
            + "\nagent log tail:\n"
            + res.payloads.get(f"agent-g{group}.log", b"").decode()[-2000:])


def test_kata38_move_with_no_port_is_critical_and_names_actor_sandbox_netdev(
        agent_run: labvm.Boot) -> None:
    """Scenario 1: Kata >=3.8's move with cold_plug_vfio=no-port raises a critical finding
    naming the shim, its sandbox and the netdev the VF took with it."""
    needs(agent_run, "ebpf", "kata")
    got = findings(agent_run, 1, "vfio-bind-coldplug-disabled")
    assert got, context(agent_run, 1)
    f = current(got)
    assert f.severity == ev.Severity.CRITICAL
    assert f.bdf == VF0
    assert f.actor is not None and f.actor.comm == "containerd-shim"
    assert f.sandbox_id == kata.sandbox_id(1)
    assert f.netdev == "eth1"


def test_kata38_move_every_write_is_attributed_to_the_shim(agent_run: labvm.Boot) -> None:
    """Scenario 1: each of the three writes of Kata >=3.8's move (driver_override, the
    device's driver/unbind leaving igbvf, drivers_probe) is seen with the shim as writer, the
    device, the value and the kernel's result, in the order the shim made them."""
    needs(agent_run, "ebpf", "kata")
    bound = next((e.ts_ns for e in journal(agent_run, 1) if isinstance(e, ev.DeviceBound)
                  and e.bdf == VF0 and e.driver == "vfio-pci"), None)
    assert bound is not None, context(agent_run, 1)
    writes = sorted((e for e in journal(agent_run, 1) if isinstance(e, ev.SysfsWriteObserved)
                     and e.ts_ns <= bound + 100_000_000), key=lambda e: e.ts_ns)
    seen = [(w.control, w.path, w.value, w.result) for w in writes]
    want = [("driver_override", f"/sys/bus/pci/devices/{VF0}/driver_override", "vfio-pci", 8),
            ("unbind", "/sys/bus/pci/drivers/igbvf/unbind", VF0, 12),
            ("drivers_probe", "/sys/bus/pci/drivers_probe", VF0, 12)]
    assert seen[-3:] == want, f"{seen}{context(agent_run, 1)}"
    for w in writes[-3:]:
        assert w.actor.comm == "containerd-shim" and w.mode == "kprobe", w
        assert w.actor.sandbox_id == kata.sandbox_id(1), w.actor
        assert w.bdf == VF0, w


def test_kata38_move_with_root_port_raises_no_coldplug_finding(agent_run: labvm.Boot) -> None:
    """Scenario 2: the same move with cold_plug_vfio=root-port is a supported cold plug."""
    evs = journal(agent_run, 2)
    assert any(isinstance(e, ev.DeviceBound) and e.bdf == VF0 and e.driver == "vfio-pci"
               for e in evs), context(agent_run, 2)
    assert not findings(agent_run, 2, "vfio-bind-coldplug-disabled")


def test_kata30_new_id_bind_sequence_is_attributed(agent_run: labvm.Boot) -> None:
    """Scenario 3: after an operator cleared the override (driverctl), the 3.0-3.7 sequence
    (unbind, new_id, bind) is seen as the shim's writes and its finding names the shim."""
    needs(agent_run, "ebpf", "kata")
    evs = journal(agent_run, 3)
    writes = [e for e in evs if isinstance(e, ev.SysfsWriteObserved)]
    assert {"unbind", "new_id", "bind"} <= {w.control for w in writes}, context(agent_run, 3)
    assert all(w.actor.comm == "containerd-shim" for w in writes if w.control == "new_id")
    got = findings(agent_run, 3, "vfio-bind-coldplug-disabled")
    assert got, context(agent_run, 3)
    f = current(got)
    assert f.actor is not None and f.actor.comm == "containerd-shim", (
        f"actor {f.actor and f.actor.comm!r}; summary: {f.summary}")


def test_stranded_vf_is_flagged_after_the_grace_period(agent_run: labvm.Boot) -> None:
    """Scenario 4: a VF left on vfio-pci with no sandbox and no holder is flagged."""
    got = findings(agent_run, 4, "vf-stranded-on-vfio")
    assert any(f.status == "open" and f.bdf == VF0 for f in got), context(agent_run, 4)


def test_stranded_vf_resolves_when_a_process_holds_its_vfio_group(agent_run: labvm.Boot) -> None:
    """Scenario 4: a process opening /dev/vfio/<group> with the VFIO ioctls (the VMM's part)
    resolves the finding while the VF is still on vfio-pci."""
    needs(agent_run, "ebpf")
    held = timeline_ns(agent_run, 4, "qemu stand-in pid")
    exited = timeline_ns(agent_run, 4, "qemu stand-in exited")
    got = [f for f in findings(agent_run, 4, "vf-stranded-on-vfio") if f.status == "resolved"]
    assert any(f.resolved_ns is not None and held - 2 * 10**9 <= f.resolved_ns <= exited
               for f in got), context(agent_run, 4)


def test_restore_stopped_after_unbind_is_stuck_unbound(agent_run: labvm.Boot) -> None:
    """Scenario 5: override set to the host driver, unbind done, no drivers_probe."""
    needs(agent_run, "ebpf")  # the override write is only seen by the eBPF source
    got = findings(agent_run, 5, "vf-stuck-unbound")
    assert any(f.status == "open" and f.bdf == VF0 for f in got), context(agent_run, 5)


def test_two_actors_taking_turns_is_driver_flapping(agent_run: labvm.Boot) -> None:
    """Scenario 6: three round trips vfio-pci <-> igbvf within the window is a flap."""
    assert findings(agent_run, 6, "driver-flapping"), context(agent_run, 6)


def test_driver_flapping_names_both_actors(agent_run: labvm.Boot) -> None:
    """Scenario 6: the shim and sriov-network-config-daemon alternate: both are named."""
    needs(agent_run, "ebpf")
    got = findings(agent_run, 6, "driver-flapping")
    assert got, context(agent_run, 6)
    text = " ".join(f"{k}={v}" for f in got for k, v in f.labels) + " ".join(
        e.text for f in got for e in f.evidence)
    assert "containerd-shim" in text
    assert "sriov-network-c" in text  # comm is cut to 15 characters


def _open_only_writes(res: labvm.Boot, n: int) -> list[ev.SysfsWriteObserved]:
    writes = [e for e in journal(res, n) if isinstance(e, ev.SysfsWriteObserved)]
    assert writes, f"no writes seen{context(res, n)}"
    assert all(w.mode == "tracepoint" and w.stage == "open" for w in writes), writes[0]
    return writes


def test_open_only_tracepoint_mode_names_the_shim_of_the_kata38_move(agent_run: labvm.Boot) -> None:
    """Scenario 7 (scenario 1 under an agent without kprobes, open-only variant): the shim's
    three opens are seen, driver_override's value is read back, and the critical finding
    names the shim with the device of its unbind and drivers_probe recovered from the real
    igbvf/vfio-pci uevents that followed."""
    needs(agent_run, "ebpf", "kata")
    writes = _open_only_writes(agent_run, 7)
    shim = [w for w in writes if w.actor.comm == "containerd-shim"]
    assert {"driver_override", "unbind", "drivers_probe"} <= {w.control for w in shim}, writes
    assert any(w.control == "driver_override" and w.value == "vfio-pci" and w.value_recovered
               for w in shim), shim
    got = findings(agent_run, 7, "vfio-bind-coldplug-disabled")
    assert got, context(agent_run, 7)
    f = current(got)
    assert f.severity == ev.Severity.CRITICAL and f.bdf == VF0
    assert f.actor is not None and f.actor.comm == "containerd-shim"
    texts = [e.text for e in f.evidence if e.kind == "sysfs_write_observed"]
    assert any(f"unbind for writing: ok; value '{VF0}' recovered (from the unbind that followed)"
               in t for t in texts), texts
    assert any(f"drivers_probe for writing: ok; value '{VF0}' recovered (from the bind that "
               "followed)" in t for t in texts), texts


def test_open_only_tracepoint_mode_names_the_shim_of_the_kata30_move(agent_run: labvm.Boot) -> None:
    """Scenario 8 (scenario 3, open-only): unbind, new_id and bind are seen as the shim's opens,
    and the critical finding names the shim although no value was read in the kernel."""
    needs(agent_run, "ebpf", "kata")
    writes = _open_only_writes(agent_run, 8)
    assert {"unbind", "new_id", "bind"} <= {w.control for w in writes
                                            if w.actor.comm == "containerd-shim"}, writes
    got = findings(agent_run, 8, "vfio-bind-coldplug-disabled")
    assert got, context(agent_run, 8)
    f = current(got)
    assert f.severity == ev.Severity.CRITICAL
    assert f.actor is not None and f.actor.comm == "containerd-shim", f.summary


def test_open_only_unbind_through_a_vanished_netdev_link_is_attributed(
        agent_run: labvm.Boot) -> None:
    """Scenario 9 (open-only): a daemon unbinds the VF through /sys/class/net/<if>/device/
    driver/unbind, a link the unbind itself removes before the agent resolves the path. The open
    is still reported as an unbind by the daemon, and the core, replaying the agent's journal,
    puts it in the VF's episode with the device recovered from the real igbvf unbind."""
    needs(agent_run, "ebpf")
    writes = _open_only_writes(agent_run, 9)
    mine = [w for w in writes if w.actor.comm == "sriov-network-c" and w.control == "unbind"]
    assert mine, [(w.actor.comm, w.path) for w in writes]
    # As written when the netdev was already gone, else through the (still present) link.
    assert mine[0].path in (f"/sys/bus/pci/devices/{VF0}/driver/unbind",
                            "/sys/class/net/eth1/device/driver/unbind"), mine[0].path
    end = max(e.ts_ns for e in journal(agent_run, 9))
    body = agent_run.payloads["journal-g2.jsonl"]
    c = Correlator()
    for line in body.splitlines():
        rec = codec.loads(line)
        if isinstance(rec, ev.Event) and rec.ts_ns <= end:
            c.feed(rec)
    ep = c.model.episodes[VF0]
    texts = [x.text for x in ep.evidence()]
    assert any(f"sriov-network-c[{mine[0].actor.pid}] opened" in t and f"value '{VF0}' recovered "
               "(from the unbind that followed)" in t for t in texts), texts


def test_without_ebpf_kata_lines_from_the_journal_make_it_critical_and_name_the_shim(
        agent_run: labvm.Boot) -> None:
    """Scenario 10 (issue 17): the agent runs with its eBPF source disabled; Kata's own lines
    reach it through journald: the move is critical, the actor is the shim (its pid from the
    line) and the sandbox is named; the writes in the evidence are Kata's (mode kata-log)."""
    needs(agent_run, "uevent", "kata")
    events = journal(agent_run, 10)
    assert not any(isinstance(e, ev.SourceStateChanged) and e.name == "ebpf" and e.up
                   for e in events), "eBPF must be off in this scenario"
    got = [f for f in events if isinstance(f, ev.Finding)
           and f.rule == "vfio-bind-coldplug-disabled"]
    assert got, "no cold-plug finding" + context(agent_run, 10)
    f = current(got)
    shim = timeline_ns(agent_run, 10, "shim pid")
    line = next(x for x in agent_run.payloads["timeline-10.txt"].decode().splitlines()
                if "shim pid" in x)
    pid, sid = int(line.split("shim pid ")[1].split()[0]), line.split("sandbox ")[1].split(":")[0]
    assert shim and f.severity == ev.Severity.CRITICAL
    assert f.actor is not None and f.actor.pid == pid and f.actor.kata_runtime == "go"
    assert f.sandbox_id == sid
    writes = [e for e in events if isinstance(e, ev.SysfsWriteObserved) and e.bdf == VF0]
    assert writes and all(w.mode == "kata-log" and w.actor.pid == pid for w in writes)
