"""Agent scenarios: `vfiowatch run --journal` in the guest while real actors move a real VF.

Scenarios 1-5 share one agent (its start-up, mostly bcc compiling the probes, is the slow
part under TCG), 6 gets its own, 7-8 (1 and 3 again) one forced into tracepoint mode; the VF is put back on igbvf and the Kata configuration
rewritten before each. Sends `journal-g<group>.jsonl` and `agent-g<group>.log` per agent,
`timeline-<n>.txt` per scenario, `scenarios.txt` (`<n> <group> <start_ns> <end_ns>` a line,
wall clock, for slicing the journals), `sources.txt` and `agent-help.txt`.
`lab.only=1,4` on the kernel command line picks scenarios; `lab.dry=1` plays them without
the agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import kata
import labio
import sriov
from sriov import PCI, VF0

LAB_CONFIG = "/etc/vfiowatch/lab.toml"
# Short grace periods so the lab finishes quickly; everything else is the agent's default.
LAB_CORE = """[core]
stranded_grace = 5
stuck_grace = 5
flapping_moves = 4
flapping_window = 120
"""
# bcc compiles the agent's probes at start-up: minutes under TCG on a loaded 2-core host.
READY_TIMEOUT = 420.0
PROGRESS_EVERY_S = 60.0
"""While waiting for the agent, a progress line this often (the host's hang detector waits 240 s)."""
# Scenarios 1-5 share one agent (start-up is the slow part); 6 gets a fresh one so its
# driver-flapping window holds only its own moves; 7 and 8 replay 1 and 3 under an agent
# forced into tracepoint mode (kernels without kprobes), whose default open-only variant
# sees the opens only: the devices must be recovered from the uevents that follow; 9 unbinds
# through a netdev's link that the unbind removes before the agent can resolve it.
GROUPS = [[1, 2, 3, 4, 5], [6], [7, 8, 9], [10]]
GROUP_CONFIG = {2: '\n[sources.ebpf]\nmode = "tracepoint"\n'}
GROUP_ARGS = {3: ["--disable-source", "ebpf"]}
"""Agent 3 runs without eBPF (a host without headers, a container without tracefs): Kata's
own lines, read from the journal, are the only witness of who moved the VF."""


def registered_sources() -> list[str]:
    """The sources the installed agent registers (it reports a state for each at start)."""
    code = "from diag.sources import SOURCES; print(','.join(SOURCES.load()))"
    res = subprocess.run(["python3", "-c", code], capture_output=True, text=True, check=False)
    names = [x for x in res.stdout.strip().split(",") if x]
    if res.returncode != 0 or not names:  # a broken install must fail the lab, not shrink it
        raise RuntimeError(f"cannot list the agent's sources (rc={res.returncode}): "
                           f"{res.stderr.strip()[-1500:]}")
    return names


class Agent:
    """One `vfiowatch run --journal` process and the journal it writes."""

    def __init__(self, n: int, help_text: str, *, pipe: bool = False, extra_config: str = "",
                 extra_args: list[str] | None = None) -> None:
        """Starts the agent; its output goes to /tmp/agent-<n>.log, or to a pipe if `pipe`.
        `extra_config` is appended to the lab's configuration for this agent only."""
        self.journal = f"/tmp/journal-{n}.jsonl"
        self.logpath = f"/tmp/agent-{n}.log"
        cmd = ["vfiowatch", "run", "--journal", self.journal]
        if "--config" in help_text:
            config = LAB_CONFIG
            if extra_config:
                config = f"/etc/vfiowatch/lab-{n}.toml"
                with open(LAB_CONFIG) as src, open(config, "w") as dst:
                    dst.write(src.read() + extra_config)
            cmd += ["--config", config]
        cmd += extra_args or []
        args = extra_args or []
        self.disabled = {args[i + 1] for i, a in enumerate(args[:-1]) if a == "--disable-source"}
        self.cmd = cmd
        self.log = open(self.logpath, "wb")  # noqa: SIM115 (closed in stop)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if pipe else self.log,
                                     stderr=subprocess.STDOUT)
        self.since_ns = 0
        """Only records at or after this wall-clock time count (the current scenario's)."""
        labio.say("agent: " + " ".join(cmd))

    def records(self) -> list[dict]:
        try:
            with open(self.journal, "rb") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a line being written
                out.append(json.loads(line))
        return out

    def wait(self, pred: Callable[[dict], bool], timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        said = time.monotonic()
        while time.monotonic() < end:
            if time.monotonic() - said > PROGRESS_EVERY_S:
                # A line now and then: the host takes a guest silent for 240 s as hung, and on a
                # loaded host the agent's start-up (Python, then bcc's compile) is longer.
                said = time.monotonic()
                labio.say(f"waiting for the agent: {len(self.records())} journal records so far")
            for rec in self.records():
                if rec.get("ts_ns", 0) >= self.since_ns and pred(rec):
                    return rec
            if self.proc.poll() is not None:
                return None
            time.sleep(0.1)
        return None

    def wait_ready(self) -> float:
        """Waits until the uevent and eBPF sources say they are up; returns the seconds taken."""
        want = set(registered_sources()) - self.disabled
        self.sources: dict[str, str] = {}

        def up(rec: dict) -> bool:
            if rec.get("kind") == "source_state_changed" and rec.get("name") in want:
                name = rec["name"]
                self.sources[name] = ("up " + rec.get("mode", "") if rec.get("up")
                                      else "down: " + rec.get("reason", ""))
            return want <= set(self.sources)

        self.wait(up, READY_TIMEOUT)
        # The first inventory: a move made before it would be taken as the state at start.
        self.wait(lambda r: r.get("kind") == "inventory_observed", READY_TIMEOUT)
        if "ebpf" in want and self.sources.get("ebpf", "").startswith("up"):
            # The runtime reports a source up when its thread starts; the eBPF source then
            # compiles and attaches its kprobes one by one (a minute under TCG) and says
            # "attached" itself once the last one is in. Only then is every write attributed:
            # a scenario started earlier loses the writes to handlers not yet probed.
            def attached_or_down(rec: dict) -> bool:
                if rec.get("kind") != "source_state_changed" or rec.get("name") != "ebpf":
                    return False
                if not rec.get("up"):
                    self.sources["ebpf"] = "down: " + rec.get("reason", "")
                    return True
                if rec.get("source") == "ebpf" and rec.get("reason", "").startswith("attached"):
                    self.sources["ebpf"] = "up " + rec.get("mode", "") + " attached"
                    return True
                return False
            if self.wait(attached_or_down, READY_TIMEOUT) is None:
                self.sources["ebpf"] = self.sources.get("ebpf", "") + " (never said attached)"
        took = time.monotonic() - self.t0
        labio.say(f"agent ready after {took:.1f}s: {self.sources} (wanted {sorted(want)})")
        return took

    def finding(self, rule: str, status: str = "open", timeout: float = 30) -> dict | None:
        # The journal omits fields equal to their default: an open finding has no "status".
        return self.wait(lambda r: r.get("kind") == "finding" and r.get("rule") == rule
                         and r.get("status", "open") == status, timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def wait_config(agent: Agent, cold_plug: str, since_ns: int) -> bool:
    """Waits until the agent's Kata source has (re)loaded a configuration with this value."""
    def loaded(rec: dict) -> bool:
        return (rec.get("kind") == "kata_config_loaded" and rec.get("ts_ns", 0) >= since_ns
                and rec.get("config", {}).get("cold_plug_vfio", "no-port") == cold_plug)
    saved, agent.since_ns = agent.since_ns, 0
    try:
        return agent.wait(loaded, 20) is not None
    finally:
        agent.since_ns = saved


class DryAgent(Agent):
    """Stands in for the agent (kernel command line lab.dry=1): plays the scenarios only, to
    check the lab's own mechanics (actors, VFIO holder, resets) without `vfiowatch run`."""

    def __init__(self, n: int, help_text: str) -> None:
        self.journal = f"/tmp/journal-{n}.jsonl"
        self.logpath = f"/tmp/agent-{n}.log"
        self.t0 = time.monotonic()

    def wait(self, pred: Callable[[dict], bool], timeout: float) -> dict | None:
        time.sleep(min(timeout, 1.0))
        return None

    def wait_ready(self) -> float:
        self.since_ns = 0
        return 0.0

    def stop(self) -> int:
        return 0


class Timeline:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, msg: str) -> None:
        self.lines.append(f"{time.time_ns()} {msg}")
        labio.say(msg)


def reset_vf() -> None:
    """Puts VF0 back on igbvf with driver_override cleared (no agent watches this)."""
    for f in os.listdir("/run"):
        if f.startswith(("lab-mark-", "lab-go-", "lab-actor-")):
            os.unlink(f"/run/{f}")
    drv = sriov.driver_of(VF0)
    if drv and drv != "igbvf":
        sriov.write(f"{PCI}/devices/{VF0}/driver/unbind", VF0)
    with open(f"{PCI}/devices/{VF0}/driver_override") as fh:
        override = fh.read().strip()
    if override != "(null)":  # write only when needed: every write is an event to the agent
        sriov.write(f"{PCI}/devices/{VF0}/driver_override", "\n")
    if sriov.driver_of(VF0) != "igbvf":
        sriov.write(f"{PCI}/drivers/igbvf/bind", VF0)
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "igbvf", 5)


def wait_mark(name: str, timeout: float = 30) -> None:
    sriov.wait_for(lambda: os.path.exists(f"/run/lab-mark-{name}"), timeout)


def go(name: str) -> None:
    open(f"/run/lab-go-{name}", "w").close()


def saw_vfio_bind(rec: dict) -> bool:
    return (rec.get("kind") == "device_bound" and rec.get("driver") == "vfio-pci"
            and VF0 in json.dumps(rec))


# --- the six scenarios ------------------------------------------------------------------------


def s1_kata38_no_port(agent: Agent, tl: Timeline) -> None:
    """Kata Go >=3.8 moves the VF with cold_plug_vfio=no-port; then rolls back (QEMU failed)."""
    sid = kata.sandbox_id(1)
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, f"kata38-bind:{VF0};mark:bound;wait:rollback;"
                                f"kata38-restore:{VF0}:igbvf")
    tl.note(f"shim pid {shim.pid} sandbox {sid}: BindDevicetoVFIO({VF0})")
    wait_mark("bound")
    f = agent.finding("vfio-bind-coldplug-disabled", timeout=30)
    tl.note(f"finding vfio-bind-coldplug-disabled: {'seen' if f else 'NOT seen'}")
    time.sleep(1.0)
    go("rollback")
    tl.note("shim: Removing network after failure in createSandbox -> BindDevicetoHost")
    kata.wait_steps_done(shim)
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "igbvf", 5)
    time.sleep(1.5)
    kata.stop(shim)
    kata.remove_sandbox(sid)


def s2_kata38_root_port(agent: Agent, tl: Timeline) -> None:
    """The same move with cold_plug_vfio=root-port, a supported cold plug, and the life that
    follows: the VMM holds the VF, the sandbox runs, stops, and the VF goes back to igbvf."""
    sid = kata.sandbox_id(2)
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, f"kata38-bind:{VF0};mark:bound;wait:stop;"
                                f"kata38-restore:{VF0}:igbvf")
    tl.note(f"shim pid {shim.pid} sandbox {sid}: BindDevicetoVFIO({VF0})")
    wait_mark("bound")
    qemu = kata.start_vmm(sid, VF0)
    kata.wait_steps_done(qemu)
    group = int(os.path.basename(os.readlink(f"{PCI}/devices/{VF0}/iommu_group")))
    kata.write_vm_state(sid, VF0, qemu.pid, "root-port", group)
    tl.note(f"qemu stand-in pid {qemu.pid} holds the VF; persist.json written")
    seen = agent.wait(saw_vfio_bind, 30)
    tl.note(f"agent saw the vfio-pci bind: {bool(seen)}")
    time.sleep(3.0)  # what a finding would need, and then some
    kata.stop(qemu)
    tl.note("sandbox stops: stopVM, then removeNetwork -> BindDevicetoHost")
    go("stop")
    kata.wait_steps_done(shim)
    time.sleep(1.0)
    kata.stop(shim)
    kata.remove_sandbox(sid)


def s3_kata30(agent: Agent, tl: Timeline) -> None:
    """Kata Go 3.0-3.7 (unbind, new_id, bind; back: unbind, remove_id, bind) with no-port."""
    sid = kata.sandbox_id(3)
    kata.create_sandbox(sid)
    # An operator first clears the VF's override (`driverctl unset-override`), as one does on
    # a host that ran a newer Kata: the bind that follows is still Kata's (new_id), not theirs.
    op = kata.start_actor(kata.DRIVERCTL, ["unset-override", VF0], f"clear-override:{VF0}")
    kata.wait_steps_done(op)
    tl.note(f"driverctl pid {op.pid}: unset-override {VF0}")
    time.sleep(1.0)
    shim = kata.start_shim(sid, f"kata30-bind:{VF0};mark:bound;wait:stop;"
                                f"kata30-restore:{VF0}:igbvf")
    tl.note(f"shim pid {shim.pid} sandbox {sid}: 3.0-3.7 bind({VF0})")
    wait_mark("bound")
    f = agent.finding("vfio-bind-coldplug-disabled", timeout=30)
    tl.note(f"finding vfio-bind-coldplug-disabled: {'seen' if f else 'NOT seen'}")
    time.sleep(1.0)
    go("stop")
    kata.wait_steps_done(shim)
    time.sleep(1.5)
    kata.stop(shim)
    kata.stop(op)
    kata.remove_sandbox(sid)


def s4_stranded(agent: Agent, tl: Timeline) -> None:
    """A shim binds the VF and dies with its sandbox gone: stranded; a VMM opening it resolves."""
    sid = kata.sandbox_id(4)
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, f"kata38-bind:{VF0};mark:bound")
    tl.note(f"shim pid {shim.pid} sandbox {sid}: BindDevicetoVFIO({VF0}), then dies")
    kata.wait_steps_done(shim)
    kata.stop(shim)
    kata.remove_sandbox(sid)
    f = agent.finding("vf-stranded-on-vfio", timeout=45)
    tl.note(f"finding vf-stranded-on-vfio: {'seen' if f else 'NOT seen'}")
    qemu = kata.start_vmm(sid, VF0)
    kata.wait_steps_done(qemu)
    tl.note(f"qemu stand-in pid {qemu.pid} holds /dev/vfio group of {VF0}")
    f = agent.finding("vf-stranded-on-vfio", status="resolved", timeout=30)
    tl.note(f"finding vf-stranded-on-vfio resolved: {'seen' if f else 'NOT seen'}")
    time.sleep(1.0)
    kata.stop(qemu)
    tl.note("qemu stand-in exited")
    time.sleep(1.0)


def s5_stuck_unbound(agent: Agent, tl: Timeline) -> None:
    """A restore that stops after the unbind (#13837): the VF sits driverless with an override."""
    sid = kata.sandbox_id(5)
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, f"kata38-bind:{VF0};sleep:1;override:{VF0}:igbvf;"
                                f"unbind:{VF0};mark:stuck;wait:probe;probe:{VF0}")
    tl.note(f"shim pid {shim.pid}: bind, then restore stops after driver/unbind")
    wait_mark("stuck")
    f = agent.finding("vf-stuck-unbound", timeout=45)
    tl.note(f"finding vf-stuck-unbound: {'seen' if f else 'NOT seen'}")
    go("probe")
    kata.wait_steps_done(shim)
    f = agent.finding("vf-stuck-unbound", status="resolved", timeout=20)
    tl.note(f"finding vf-stuck-unbound resolved after drivers_probe: {'seen' if f else 'NOT seen'}")
    kata.stop(shim)
    kata.remove_sandbox(sid)


def s6_flapping(agent: Agent, tl: Timeline) -> None:
    """Two actors take turns: the Kata shim binds to vfio-pci, a config daemon binds back."""
    sid = kata.sandbox_id(6)
    kata.create_sandbox(sid)
    actors = []
    for i in range(3):
        shim = kata.start_shim(sid, f"kata38-bind:{VF0}")
        kata.wait_steps_done(shim)
        actors.append(shim)
        tl.note(f"round {i}: shim pid {shim.pid} bound {VF0} to vfio-pci")
        time.sleep(0.5)
        daemon = kata.start_actor("/usr/local/bin/sriov-network-config-daemon",
                                  ["--kubeconfig", "/etc/kubernetes/kubelet.conf"],
                                  f"kata38-restore:{VF0}:igbvf")
        kata.wait_steps_done(daemon)
        actors.append(daemon)
        tl.note(f"round {i}: sriov-network-config-daemon pid {daemon.pid} bound it back")
        time.sleep(0.5)
    f = agent.finding("driver-flapping", timeout=30)
    tl.note(f"finding driver-flapping: {'seen' if f else 'NOT seen'}")
    time.sleep(1.0)
    for a in actors:
        kata.stop(a)
    kata.remove_sandbox(sid)


def s9_netdev_unbind(agent: Agent, tl: Timeline) -> None:
    """An operator's daemon unbinds the VF through its netdev's link
    (/sys/class/net/<if>/device/driver/unbind), which the unbind itself removes, then probes
    it back to igbvf."""
    ifname = sorted(os.listdir(f"{PCI}/devices/{VF0}/net"))[0]
    op = kata.start_actor("/usr/local/bin/sriov-network-config-daemon", [],
                          f"netdev-unbind:{ifname}:{VF0};mark:unbound;sleep:1;probe:{VF0}")
    tl.note(f"sriov-network-config-daemon pid {op.pid}: {VF0} > /sys/class/net/{ifname}/"
            "device/driver/unbind, then drivers_probe")
    wait_mark("unbound")
    kata.wait_steps_done(op)
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "igbvf", 5)
    kata.stop(op)


def start_journald() -> None:
    """systemd-journald without systemd as PID 1: its sockets, /dev/log, and the kernel's lines."""
    if os.path.exists("/run/systemd/journal/socket"):
        return
    os.makedirs("/run/systemd/journal", exist_ok=True)
    os.makedirs("/var/log/journal", exist_ok=True)
    subprocess.Popen(["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    sriov.wait_for(lambda: os.path.exists("/run/systemd/journal/dev-log"), 10)
    if not os.path.lexists("/dev/log"):
        os.symlink("/run/systemd/journal/dev-log", "/dev/log")
    labio.say(f"journald: {'up' if os.path.exists('/run/systemd/journal/socket') else 'DOWN'}")


def kata_line(shim: int, sid: str, msg: str, **fields: str) -> None:
    """One Go shim line through syslog as Kata sends it (tag `kata`, logrus TextFormatter with
    the base fields, kata-facts §4.1); `logger --id` gives the shim's pid."""
    ts = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1_000_000_000))
    frac = f"{ts % 1_000_000_000:09d}".rstrip("0")
    base = {"name": "containerd-shim-v2", "pid": str(shim), "sandbox": sid,
            "source": "virtcontainers", **fields}
    plain = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")

    def q(v: str) -> str:
        return v if v and set(v) <= plain else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    line = (f'time="{stamp}.{frac}Z" level=info msg={q(msg)} '
            + " ".join(f"{k}={q(v)}" for k, v in sorted(base.items())))
    subprocess.run(["logger", "-t", "kata", f"--id={shim}", "--", line], check=False)


def s10_kata38_journal_only(agent: Agent, tl: Timeline) -> None:
    """eBPF disabled: the Go 3.8 move with no-port, its writes known only from Kata's own
    lines arriving through the journal, then the rollback."""
    sid = kata.sandbox_id(10)
    kata.create_sandbox(sid)
    shim = kata.start_shim(sid, "")
    tl.note(f"shim pid {shim.pid} sandbox {sid}: its lines go to journald as `kata`")
    dev = {"subsystem": "device", "device-bdf": VF0}
    kata_line(shim.pid, sid, "Write vfio-pci to driver_override", **dev,
              **{"driver-override-path": f"{PCI}/devices/{VF0}/driver_override"})
    sriov.write(f"{PCI}/devices/{VF0}/driver_override", "vfio-pci")
    kata_line(shim.pid, sid, "Unbinding device from driver", **dev,
              **{"driver-path": f"{PCI}/devices/{VF0}/driver/unbind"})
    sriov.write(f"{PCI}/devices/{VF0}/driver/unbind", VF0)
    kata_line(shim.pid, sid, "Writing bdf to drivers-probe-path", **dev,
              **{"drivers-probe-path": f"{PCI}/drivers_probe"})
    sriov.write(f"{PCI}/drivers_probe", VF0)
    f = agent.wait(lambda r: r.get("kind") == "finding" and r.get("rule") ==
                   "vfio-bind-coldplug-disabled" and r.get("severity") == "critical", 30)
    tl.note(f"finding vfio-bind-coldplug-disabled critical: {'seen' if f else 'NOT seen'}"
            + (f" actor {f.get('actor', {}).get('pid')}" if f else ""))
    time.sleep(1.0)
    kata_line(shim.pid, sid, "Removing network after failure in createSandbox",
              subsystem="sandbox")
    kata_line(shim.pid, sid, "Write igbvf to driver_override", **dev)
    sriov.write(f"{PCI}/devices/{VF0}/driver_override", "igbvf")
    sriov.write(f"{PCI}/devices/{VF0}/driver/unbind", VF0)
    sriov.write(f"{PCI}/drivers_probe", VF0)
    sriov.wait_for(lambda: sriov.driver_of(VF0) == "igbvf", 5)
    time.sleep(1.5)
    kata.stop(shim)
    kata.remove_sandbox(sid)


SCENARIOS: dict[int, tuple[str, str, Callable[[Agent, Timeline], None]]] = {
    1: ("kata38-no-port", "no-port", s1_kata38_no_port),
    2: ("kata38-root-port", "root-port", s2_kata38_root_port),
    3: ("kata30-no-port", "no-port", s3_kata30),
    4: ("stranded", "root-port", s4_stranded),
    5: ("stuck-unbound", "root-port", s5_stuck_unbound),
    6: ("flapping", "root-port", s6_flapping),
    7: ("kata38-no-port-open-only", "no-port", s1_kata38_no_port),
    8: ("kata30-no-port-open-only", "no-port", s3_kata30),
    9: ("netdev-link-unbind-open-only", "no-port", s9_netdev_unbind),
    10: ("kata38-no-port-no-ebpf-journal", "no-port", s10_kata38_journal_only),
}


def cmdline_flag(name: str) -> str:
    with open("/proc/cmdline") as fh:
        for word in fh.read().split():
            if word.startswith(f"lab.{name}="):
                return word.split("=", 1)[1]
    return ""


def selected() -> list[int]:
    with open("/proc/cmdline") as fh:
        for word in fh.read().split():
            if word.startswith("lab.only="):
                return [int(x) for x in word.split("=", 1)[1].split(",") if x]
    return sorted(SCENARIOS)


def main() -> int:
    sriov.setup()
    sriov.enable_vfs(2)
    kata.install_binaries()
    os.makedirs(os.path.dirname(LAB_CONFIG), exist_ok=True)
    with open(LAB_CONFIG, "w") as fh:
        fh.write(LAB_CORE)
    res = subprocess.run(["vfiowatch", "run", "--help"], capture_output=True, text=True)
    help_text = res.stdout + res.stderr
    labio.send("agent-help.txt", f"rc={res.returncode}\n{help_text}".encode())
    labio.send("sources.txt", (",".join(registered_sources()) + "\n").encode())
    dry = cmdline_flag("dry") == "1"
    if res.returncode != 0 and not dry:
        labio.fail(f"`vfiowatch run --help` exited {res.returncode} in the guest:\n{help_text}")
        return 1
    chosen = selected()
    bounds: list[str] = []
    for gi, group in enumerate(GROUPS):
        group = [n for n in group if n in chosen]
        if not group:
            continue
        reset_vf()
        kata.install_config(SCENARIOS[group[0]][1])
        t0 = time.monotonic()
        if gi in GROUP_ARGS:
            start_journald()
        agent = (DryAgent(gi, help_text) if dry
                 else Agent(gi, help_text, extra_config=GROUP_CONFIG.get(gi, ""),
                            extra_args=GROUP_ARGS.get(gi)))
        ready = agent.wait_ready()
        sources = getattr(agent, "sources", {})
        for n in group:
            name, cold_plug, play = SCENARIOS[n]
            reset_vf()
            tl = Timeline()
            start_ns = time.time_ns()
            changed = kata.install_config(cold_plug)
            tl.note(f"scenario {n} {name}: cold_plug_vfio={cold_plug} (agent {gi}, ready after "
                    f"{ready:.1f}s, sources {sources})")
            if changed and not dry and not wait_config(agent, cold_plug, start_ns):
                tl.note("the agent reported no configuration load with this value within 20s")
            agent.since_ns = start_ns
            t1 = time.monotonic()
            try:
                play(agent, tl)
            except Exception as exc:  # report and carry on with the next scenario
                tl.note(f"scenario raised {exc!r}")
            time.sleep(1.0)  # let the last events reach the journal
            tl.note(f"scenario {n} took {time.monotonic() - t1:.1f}s; "
                    f"{VF0} now on {sriov.driver_of(VF0) or '-'}")
            bounds.append(f"{n} {gi} {start_ns} {time.time_ns()}")
            labio.send(f"timeline-{n}.txt", ("\n".join(tl.lines) + "\n").encode())
        rc = agent.stop()
        labio.say(f"agent {gi} exited {rc} after {time.monotonic() - t0:.1f}s")
        for src, dst in ((agent.journal, f"journal-g{gi}.jsonl"), (agent.logpath, f"agent-g{gi}.log")):
            labio.send(dst, Path(src).read_bytes() if os.path.exists(src) else b"")
    labio.send("scenarios.txt", ("\n".join(bounds) + "\n").encode())
    return 0
