"""Provides the `kata` source: Kata configuration, sandboxes, VFIO holders and Kata's log lines.

A thin loop over the pure decoders of this package. `KataWatcher.step(now_ns)` does one round
and returns events (tests drive it directly); `KataSource.run` calls it on a short tick and
waits on the journal pipe in between. What each round costs is bounded and measured
(tests/bench/test_kata_poll.py):

- sandboxes: every `sandbox_interval_s` (0.5 s) one read of /proc/<pid>/comm per process plus a
  stat fingerprint of /run/vc and /run/kata; state files are re-read only when it changed.
- configuration: every `config_interval_s` (1 s) a stat of each watched path (containerd config
  and imports, Kata main files, config.d and its entries, the default paths); files are re-read
  only when a stat changed. Changes are noticed within one interval.
- processes: the comm of new pids (and of containerd / containerd-shim, which fork children
  that exec into shims and QEMU); every pid's comm once per `proc_full_every` (10) rounds.
- VFIO holders: every `holder_interval_s` (2 s) a readlink of the fds of shims, VMMs and current
  holders; every `holder_full_interval_s` (10 s) of every process. Skipped entirely while no
  /dev/vfio/<group> node exists.

Errors never escape: a bad file is an event naming file and position, and the last good view
(configuration per handler, state per sandbox) is kept.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources import (
    Availability,
    Emit,
    SourceContext,
    check_options,
    proc,
    refusal_events,
    register,
)
from diag.sources.kata import decode as kata_decode
from diag.sources.kata import discovery, loglines, sandboxes

NAME = "kata"
OPTIONS = ("log_files", "logs_from_start", "journal", "kmsg", "containerd_config", "sandbox_interval_s",
           "config_interval_s", "holder_interval_s", "holder_full_interval_s", "proc_full_every")
"""`[sources.kata]` options (see docs/sources.md, "Kata")."""
START_SLACK_NS = 1_500_000_000
"""A process's wall-clock start is known to about a second (boot time is whole seconds)."""


def _stat_key(paths: HostPaths, host_path: str) -> tuple[Any, ...] | None:
    try:
        st = paths.stat(host_path)
    except OSError:
        try:
            lst = paths.stat(host_path, follow=False)  # a dangling symlink still counts
            return ("L", lst.st_mtime_ns, lst.st_ino)
        except OSError:
            return None
    if stat.S_ISDIR(st.st_mode):
        try:
            names = tuple(sorted(paths.listdir(host_path)))
        except OSError:
            names = ()
        return ("D", st.st_mtime_ns, st.st_ino, names)
    return ("F", st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


class KataWatcher:
    """The kata source's state: last good views and what was already reported."""

    def __init__(self, paths: HostPaths, options: Mapping[str, Any] | None = None) -> None:
        opts = dict(options or {})
        self.paths = paths
        self.containerd_config: str | None = opts.get("containerd_config")
        self.sandbox_interval = float(opts.get("sandbox_interval_s", 0.5))
        self.config_interval = float(opts.get("config_interval_s", 1.0))
        self.holder_interval = float(opts.get("holder_interval_s", 2.0))
        self.holder_full_interval = float(opts.get("holder_full_interval_s", 10.0))
        self.log_files = [loglines.FileFollower(p, from_start=bool(opts.get("logs_from_start", False)))
                          for p in opts.get("log_files", ())]
        self.use_journal = bool(opts.get("journal", True))
        self.journal: loglines.JournaldFollower | None = None
        self.journal_reason = ""
        self.use_kmsg = bool(opts.get("kmsg", True))
        self.kmsg: loglines.KmsgFollower | None = None
        self.boot_ns = 0
        self.dedup = loglines.Deduper()
        self.journal_restarts = 0
        self.journal_retry_s = 5.0

        self.configs: dict[str, ev.KataConfig] = {}
        """Last good configuration per handler."""
        self.discovery: discovery.Discovery | None = None
        self._config_fp: tuple[Any, ...] | None = None
        self._reported_errors: set[tuple[Any, ...]] = set()
        self._assumed_reported = False

        self.sandboxes: dict[str, ev.SandboxStarted] = {}
        self._sb_config: dict[str, tuple[str | None, ev.KataConfig | None]] = {}
        """Configuration each sandbox started with (frozen at first sight)."""
        self._states: dict[str, kata_decode.StateInfo] = {}
        """Last good state file per sandbox (a half-written file keeps the previous one)."""
        self._state_fp: tuple[Any, ...] | None = None
        self._state_dirs = sandboxes.StateDirs()
        self._sb_errors: set[tuple[Any, ...]] = set()
        self._bundles: sandboxes.BundleCache = {}
        self._sb_stale: set[str] = set()
        """Sandboxes whose shim started before the last change of their handler's files."""
        self.procs = sandboxes.ProcScan()
        self.proc_cache = sandboxes.ProcCache(full_every=int(opts.get("proc_full_every", 10)))

        self.holders: dict[int, tuple[int, ...]] = {}
        self._next = {"config": 0.0, "sandbox": 0.0, "holders": 0.0, "holders_full": 0.0, "journal": 0.0}
        self.decode_failures = 0

    # ---- configuration --------------------------------------------------------------------

    def _shim_handler(self, shim: kata_decode.ProcInfo) -> str:
        handlers = self.discovery.containerd.handlers if self.discovery else ()
        # By binary only: a runtime-rs shim found on PATH must still map to its handler.
        h = kata_decode.handler_for(handlers, shim_exe=shim.exe, shim_argv0=shim.argv[0] if shim.argv else "")
        if h is not None:
            return h
        has_rs = self.discovery is not None and any(ld.handler == "default-rs" for ld in self.discovery.loads)
        return "default-rs" if shim.runtime == "rs" and has_rs else "default"

    def _runtimes(self) -> dict[str, str]:
        """Handler -> runtime its running shims show (runtime-rs by install path)."""
        out: dict[str, str] = {}
        for shim in self.procs.shims.values():
            if shim.runtime:
                out.setdefault(self._shim_handler(shim), shim.runtime)
        return out

    def _envs(self) -> tuple[dict[str, dict[str, str]], dict[str, str] | None]:
        envs: dict[str, dict[str, str]] = {}
        for shim in self.procs.shims.values():
            if shim.env_kata_conf is None:
                continue
            envs.setdefault(self._shim_handler(shim), {"KATA_CONF_FILE": shim.env_kata_conf})
        default_env = None
        if self.procs.containerd is not None:
            env = proc.read_environ(self.paths, self.procs.containerd.pid)
            if "KATA_CONF_FILE" in env:
                default_env = {"KATA_CONF_FILE": env["KATA_CONF_FILE"]}
        return envs, default_env

    def config_fingerprint(self) -> tuple[Any, ...]:
        watch = self.discovery.watch if self.discovery else ()
        envs, default_env = self._envs()
        return (tuple((p, _stat_key(self.paths, p)) for p in watch),
                tuple(sorted((k, tuple(sorted(v.items()))) for k, v in envs.items())),
                tuple(sorted(self._runtimes().items())),
                tuple(sorted((default_env or {}).items())),
                sandboxes.containerd_config_arg(self.procs.containerd))

    def step_config(self, ts_ns: int) -> list[ev.Event]:
        fp = self.config_fingerprint() if self.discovery is not None else None
        if fp is not None and fp == self._config_fp:
            return []
        envs, default_env = self._envs()
        ctd = self.containerd_config or sandboxes.containerd_config_arg(self.procs.containerd)
        disc = discovery.discover(self.paths, containerd_config=ctd, envs=envs, default_env=default_env,
                                runtimes=self._runtimes() if self.discovery else None)
        self.discovery = disc
        self._config_fp = self.config_fingerprint()
        out: list[ev.Event] = []
        current: set[tuple[Any, ...]] = set()
        for err in disc.errors:
            key = (err.handler, err.path, err.message, err.line, err.column)
            current.add(key)
            if key not in self._reported_errors:
                out.append(err.event(ts_ns, NAME))
        self._reported_errors = current
        seen = set()
        for load in disc.loads:
            seen.add(load.handler)
            cfg = load.config
            if cfg is None:
                continue  # errors reported above; the last good view (if any) stays
            prev = self.configs.get(load.handler)
            if prev != cfg:
                self.configs[load.handler] = cfg
                out.append(ev.KataConfigLoaded(ts_ns=ts_ns, source=NAME, config=cfg, changed=prev is not None))
        for gone in [h for h in self.configs if h not in seen]:
            del self.configs[gone]
        return out

    # ---- sandboxes ------------------------------------------------------------------------

    def _handler_config(self, sid: str, bundle: kata_decode.BundleInfo | None,
                        state: kata_decode.StateInfo | None) -> tuple[str | None, ev.KataConfig | None]:
        if sid in self._sb_config:
            return self._sb_config[sid]
        handlers = self.discovery.containerd.handlers if self.discovery else ()
        shim = self.procs.shims.get(sid)
        runtime = (shim.runtime if shim else None) or (state.runtime if state else None) or (
            "rs" if sid in self._state_dirs.rs else "go")
        exe = shim.exe if shim else (bundle.shim_binary if bundle else "")
        handler = kata_decode.handler_for(
            handlers, shim_exe=exe, shim_argv0=shim.argv[0] if shim and shim.argv else "",
            annotations=bundle.annotations if bundle else None, runtime=runtime,
            hypervisor=state.hypervisor if state else "", configs=self.configs)
        if handler is None:
            rs_default = "default-rs" if "default-rs" in self.configs else "default"
            handler = rs_default if runtime == "rs" else "default"
        cfg = self.configs.get(handler)
        if cfg is None and handler.startswith("default") and self.configs:
            cfg = next(iter(self.configs.values()))
        if cfg is not None:  # frozen: a later config change does not apply to a running sandbox
            self._sb_config[sid] = (handler, cfg)
            if shim is not None:
                if not self.boot_ns:
                    self.boot_ns = loglines.boot_time_ns(self.paths)
                started = sandboxes.process_start_ns(self.paths, shim.pid, self.boot_ns)
                changed = sandboxes.config_mtime_ns(self.paths, cfg)
                # btime has 1 s resolution, so only a change clearly after the start counts.
                if started is not None and changed is not None and changed > started + START_SLACK_NS:
                    self._sb_stale.add(sid)
        return handler, cfg

    def step_sandboxes(self, ts_ns: int, *, rescan: bool = True) -> list[ev.Event]:
        """Every sandbox that a state directory, a shim or a VMM shows, as SandboxStarted when
        new or changed; SandboxStopped for the ones gone."""
        out: list[ev.Event] = []
        if rescan:
            self.procs = sandboxes.scan_processes(self.paths, self.proc_cache)
        self._read_states(ts_ns, out)
        dirs = self._state_dirs
        ids = set(dirs.go) | set(dirs.rs) | set(self.procs.shims) | set(self.procs.vmms)
        for gone in [s for s in self._states if s not in dirs.go and s not in dirs.rs]:
            del self._states[gone]
        names = sandboxes.netns_names(self.paths) if ids else {}
        current: dict[str, ev.SandboxStarted] = {}
        for sid in sorted(ids):
            current[sid] = event = self._sandbox(sid, ts_ns, names, out)
            prev = self.sandboxes.get(sid)
            if prev is None or replace(prev, ts_ns=ts_ns) != event:
                out.append(event)
        for sid in self.sandboxes:
            if sid not in current:
                out.append(ev.SandboxStopped(ts_ns=ts_ns, source=NAME, sandbox_id=sid))
                self._sb_config.pop(sid, None)
                self._bundles.pop(sid, None)
                self._sb_stale.discard(sid)
                self._sb_errors = {k for k in self._sb_errors if k[0] != sid}
        self.sandboxes = current
        return out

    def _read_states(self, ts_ns: int, out: list[ev.Event]) -> None:
        """Re-read the state directories when they changed; a damaged file is reported once and
        its last good state kept."""
        fp = sandboxes.state_signature(self.paths)
        if fp == self._state_fp:
            return
        self._state_fp = fp
        self._state_dirs = sandboxes.read_state(self.paths)
        for sid, err in self._state_dirs.errors.items():
            key = (err.path, err.message)
            if key not in self._sb_errors:
                self._sb_errors.add(key)
                self.decode_failures += 1
                out.append(ev.DecodeFailed(ts_ns=ts_ns, source=NAME, failed_source=NAME,
                                           reason=err.message + (
                                               "; keeping the last good state" if sid in self._states else "")))
        self._states.update(self._state_dirs.states)

    def _sandbox(self, sid: str, ts_ns: int, names: dict[int, str],
                 out: list[ev.Event]) -> ev.SandboxStarted:
        """One sandbox from its state, bundle, shim and VMM (errors reported once each)."""
        state = self._states.get(sid)
        bundle = sandboxes.read_bundle(self.paths, sid, cache=self._bundles)
        if isinstance(bundle, kata_decode.DecodeError):
            key = (bundle.path, bundle.message)
            if key not in self._sb_errors:
                self._sb_errors.add(key)
                out.append(ev.DecodeFailed(ts_ns=ts_ns, source=NAME, failed_source=NAME, reason=bundle.message))
            bundle = None
        handler, cfg = self._handler_config(sid, bundle, state)
        shim, vmm = self.procs.shims.get(sid), self.procs.vmms.get(sid)
        inode = vmm.netns if vmm else None
        if inode is None and bundle and bundle.netns_path:
            inode = proc.ns_inode(self.paths, bundle.netns_path)
        if inode is None and shim is not None and shim.netns != self.procs.host_netns:
            inode = shim.netns
        dirs = self._state_dirs
        asm = kata_decode.assemble(
            sid, ts_ns=ts_ns, state=state, bundle=bundle, shim=shim, vmm=vmm,
            vm_pid=dirs.vm_pids.get(sid), handler=handler, cfg=cfg,
            runtime_hint="rs" if sid in dirs.rs else None, netns_inode=inode, names=names,
            host_netns=self.procs.host_netns, config_changed=sid in self._sb_stale)
        for cerr in asm.errors:
            key = (sid, cerr.message)
            if key not in self._sb_errors:
                self._sb_errors.add(key)
                out.append(cerr.event(ts_ns, NAME))
        return asm.event

    # ---- VFIO holders ---------------------------------------------------------------------

    def step_holders(self, ts_ns: int, *, full: bool = True) -> list[ev.Event]:
        """Who holds /dev/vfio/<group>. A partial round reads only the fds of shims, VMMs and
        current holders (a holder's exit is seen at once); a full round reads every process."""
        if not self.holders and not sandboxes.vfio_groups_present(self.paths):
            return []
        if full:
            now = sandboxes.scan_vfio_holders(self.paths)
        else:
            scanned = {p.pid for p in self.procs.vmms.values()} | {p.pid for p in self.procs.shims.values()}
            scanned |= {pid for held in self.holders.values() for pid in held}
            now = sandboxes.scan_vfio_holders(self.paths, sorted(scanned))
            for group, held in self.holders.items():  # holders outside the scanned set: unknown, kept
                keep = [pid for pid in held if pid not in scanned]
                if keep:
                    now[group] = tuple(sorted(set(now.get(group, ())) | set(keep)))
        out: list[ev.Event] = []
        for group, pids in sorted(now.items()):
            before = set(self.holders.get(group, ()))
            for pid in pids:
                if pid not in before:
                    holder = proc.read_process(self.paths, pid) or ev.Process(pid=pid)
                    out.append(ev.VfioGroupHeld(ts_ns=ts_ns, source=NAME, group=group, holder=holder))
        for group, pids in sorted(self.holders.items()):
            still = set(now.get(group, ()))
            for pid in pids:
                if pid not in still:
                    out.append(ev.VfioGroupReleased(ts_ns=ts_ns, source=NAME, group=group, pid=pid))
        self.holders = now
        return out

    # ---- logs -----------------------------------------------------------------------------

    def start_journal(self) -> None:
        """Follow the journal; without one, the kernel's lines come from /dev/kmsg instead."""
        if self.use_journal and self.journal is None:
            ok, why = loglines.JournaldFollower.available(self.paths)
            if ok:
                self.journal = loglines.JournaldFollower(self.paths)
                try:
                    self.journal.start()
                except OSError as exc:
                    why = f"journalctl: {exc}"
                    self.journal = None
            self.journal_reason = why
        if self.journal is None and self.use_kmsg and self.kmsg is None:
            k = loglines.KmsgFollower("/dev/kmsg", paths=self.paths)
            if k.start():
                self.kmsg = k
                self.boot_ns = loglines.boot_time_ns(self.paths)

    def _matched(self, rec: loglines.LogRecord | None, ts_ns: int, out: list[ev.Event]) -> None:
        if rec is None or self.dedup.seen(rec):
            return
        # Every witness counts: a Kata line announcing a write is that write (attributed to
        # the shim, mode kata-log), beside or instead of eBPF's record of it.
        out.extend(loglines.to_events(rec, ts_ns=ts_ns, source=NAME))

    def step_logs(self, ts_ns: int, timeout: float = 0.0) -> list[ev.Event]:
        out: list[ev.Event] = []
        for f in self.log_files:
            for line in f.poll():
                self._matched(loglines.decode_text_line(line, f.origin), ts_ns, out)
        if self.kmsg is not None:
            for raw in self.kmsg.poll():
                self._matched(loglines.decode_kmsg(raw, self.boot_ns), ts_ns, out)
        if self.journal is not None:
            for entry in self.journal.poll(timeout):
                self._matched(loglines.decode_journal_entry(entry), ts_ns, out)
            if self.journal.proc is None:  # journalctl exited: start it again a little later
                self.journal_reason = self.journal.reason or "journalctl exited"
                self.journal = None
                self.journal_restarts += 1
                self._next["journal"] = time.monotonic() + self.journal_retry_s
        elif timeout:
            time.sleep(timeout)
        return out

    # ---- one round ------------------------------------------------------------------------

    def step(self, ts_ns: int, mono: float | None = None, *, force: bool = False) -> list[ev.Event]:
        """Everything due at monotonic time `mono` (all of it when `force`)."""
        mono = time.monotonic() if mono is None else mono
        out: list[ev.Event] = []
        sb_due = force or mono >= self._next["sandbox"]
        cfg_due = force or mono >= self._next["config"]
        if sb_due or cfg_due:  # config discovery reads KATA_CONF_FILE from the running shims
            self.procs = sandboxes.scan_processes(self.paths, self.proc_cache)
        if cfg_due:
            self._next["config"] = mono + self.config_interval
            out += self.step_config(ts_ns)
        if sb_due:
            self._next["sandbox"] = mono + self.sandbox_interval
            out += self.step_sandboxes(ts_ns, rescan=False)
        if force or mono >= self._next["holders"]:
            self._next["holders"] = mono + self.holder_interval
            full = force or mono >= self._next["holders_full"]
            if full:
                self._next["holders_full"] = mono + self.holder_full_interval
            out += self.step_holders(ts_ns, full=full)
        if self.use_journal and self.journal is None and self.journal_restarts and mono >= self._next["journal"]:
            self.start_journal()
            if self.journal is None:
                self._next["journal"] = mono + self.journal_retry_s
        out += self.step_logs(ts_ns)
        out += self.refused(ts_ns)
        return out

    def refused(self, ts_ns: int) -> list[ev.Event]:
        """Each path refused since the last round (it leads outside --root), as a DecodeFailed."""
        out = refusal_events(self.paths, NAME, ts_ns)
        self.decode_failures += len(out)
        return out

    def close(self) -> None:
        if self.journal is not None:
            self.journal.stop()
            self.journal = None
        if self.kmsg is not None:
            self.kmsg.stop()
            self.kmsg = None


@register
class KataSource:
    """Kata configuration, sandboxes, VFIO group holders and Kata's log lines."""

    name: ClassVar[str] = NAME

    def __init__(self, ctx: SourceContext | None = None) -> None:
        self.ctx = ctx or SourceContext()
        check_options(self.name, self.ctx.options, OPTIONS)
        self.watcher: KataWatcher | None = None

    def probe(self) -> Availability:
        disc = discovery.discover(self.ctx.paths)
        if not disc.installed:
            return Availability(True, "no Kata installed: assuming built-in default cold_plug_vfio = no-port",
                                mode="assumed")
        return Availability(True, f"{len(disc.loads)} Kata runtime handler(s)", mode="configured")

    def run(self, emit: Emit, stop: threading.Event) -> None:
        w = self.watcher = KataWatcher(self.ctx.paths, self.ctx.options)
        w.start_journal()
        emit(ev.SourceStateChanged(
            ts_ns=time.time_ns(), source=NAME, name=NAME, up=True,
            mode="journal" if w.journal else ("kmsg" if w.kmsg else ("files" if w.log_files else "no-logs")),
            reason="" if w.journal or not w.use_journal else f"journal not followed: {w.journal_reason}",
            hint="" if w.journal or not w.use_journal else
            "name Kata's log files in [sources.kata] log_files, or mount the host's journal under --root",
        ))
        first = True
        try:
            while not stop.is_set():
                try:
                    for e in w.step(time.time_ns(), force=first):
                        emit(e)
                except Exception as exc:  # a source never dies of one bad round
                    emit(ev.DecodeFailed(ts_ns=time.time_ns(), source=NAME, failed_source=NAME,
                                         reason=f"kata round failed: {exc!r}"))
                first = False
                try:
                    for e in w.step_logs(time.time_ns(), timeout=0.1):
                        emit(e)
                except Exception as exc:
                    emit(ev.DecodeFailed(ts_ns=time.time_ns(), source=NAME, failed_source=NAME,
                                         reason=f"kata log round failed: {exc!r}"))
                    time.sleep(0.1)
        finally:
            w.close()  # the runtime reports the stop itself

