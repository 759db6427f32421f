"""Provides the `kata` source: Kata configuration, sandboxes, VFIO holders and Kata's log lines.

A thin loop over the pure decoders of this package. By default `KataSource.run` sleeps on the
kernel's notifications (`changes.ChangeFeed`: process events and inotify) and re-reads only
what one of them says changed (`KataWatcher.feed_round`); every change, however noticed, goes
through `KataWatcher.on_change`. Without them it polls: `KataWatcher.step(now_ns)` does one
round and returns events (tests drive it directly). What a polling round costs is bounded and
measured beside event mode (tests/bench/test_kata_bench.py):

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
- exposure (rule `kata-vfio-exposure`): each handler's facts (Kata version and its source,
  effective cold_plug_vfio, the VFs pods can be given) at start, in the same round as any
  configuration change, and every `exposure_interval_s` (5 s, in both modes): a readlink of each
  PCI device's driver and a stat of the version sources; binaries, package databases, the
  inventory and the device plugin's configuration are read again only when those changed; a
  Kata log line with a new `version=` (Go kata-runtime, with its commit) is judged in the next
  round. A KataFactsObserved is sent per handler whose facts changed (and `gone` for a handler
  no longer configured).

Errors never escape: a bad file is an event naming file and position, and the last good view
(configuration per handler, state per sandbox) is kept.
"""

from __future__ import annotations

import select
import stat
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from diag import events as ev
from diag.common.paths import HostPaths
from diag.events import replace
from diag.sources import (
    Availability,
    Emit,
    SourceContext,
    check_options,
    proc,
    refusal_events,
    register,
)
from diag.sources._wake import StopRelay
from diag.sources.kata import changes, discovery, exposure, loglines, sandboxes
from diag.sources.kata import decode as kata_decode
from diag.sources.kata import version as kversion
from diag.sources.watermark import Watermark

NAME = "kata"
OPTIONS = ("log_files", "logs_from_start", "journal", "kmsg", "containerd_config", "sandbox_interval_s",
           "config_interval_s", "holder_interval_s", "holder_full_interval_s", "proc_full_every",
           "exposure_interval_s", "process_events", "process_events_interval_s", "inotify")
"""`[sources.kata]` options (see docs/sources.md, "Kata")."""
START_SLACK_NS = 1_500_000_000
"""A process's wall-clock start is known to about a second (boot time is whole seconds)."""


def _pids(scan: sandboxes.ProcScan) -> tuple[Any, ...]:
    return (tuple(sorted((k, v.pid) for k, v in scan.shims.items())),
            tuple(sorted((k, v.pid) for k, v in scan.vmms.items())),
            scan.containerd.pid if scan.containerd else None)


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
        self.exposure_interval = float(opts.get("exposure_interval_s", 5.0))
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
        self._holder_pids: set[int] = set()
        self.exposure_watch = exposure.ExposureWatch()
        self.exposure: exposure.HostExposure | None = None
        """The last assessment of every handler (what `check` shows)."""
        self.facts: dict[str, ev.KataHandlerFacts] = {}
        """Last facts sent per handler."""
        self.log_versions: dict[bool, ev.KataVersionReading] = {}
        """The newest version reading Kata's log lines gave (True) and the newest refused one
        (False: runtime-rs's crate version), for the exposure (never exact)."""
        self._exposure_due = True
        self._next = {"config": 0.0, "sandbox": 0.0, "holders": 0.0, "holders_full": 0.0, "journal": 0.0,
                      "exposure": 0.0}
        self.decode_failures = 0

        self.use_process_events = bool(opts.get("process_events", True))
        self.proc_interval = float(opts.get("process_events_interval_s", changes.PROC_INTERVAL_S))
        self.use_inotify = bool(opts.get("inotify", True))
        self.feed: changes.ChangeFeed | None = None
        """Event mode: the kernel notifications that replace the timers (None: polling)."""
        self.procwatch: sandboxes.ProcWatch | None = None
        """Event mode with process events: the Kata processes, kept by exec/exit."""
        self._exit_pids: set[int] | None = None
        """The processes whose exit the kernel sends (the socket's filter)."""
        self.exit_filter_error = ""
        """Why the socket filter could not be attached (every exit then comes)."""

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
        """What the discovery's result depends on: the stats of its files and only the inputs
        it would use (a shim's environment and runtime count for its handler only when they
        differ from what the handler gets without it), so a shim's exec or exit that changes
        no handler's inputs costs no rediscovery."""
        disc = self.discovery
        watch = disc.watch if disc else ()
        envs, default_env = self._envs()
        runtimes = self._runtimes()
        configured = disc.configured_runtimes if disc is not None else ()
        names = [n for n, _ in configured] if configured else ["default", "default-rs"]
        return (tuple((p, _stat_key(self.paths, p)) for p in watch),
                tuple((n, tuple(sorted((envs.get(n) or default_env or {}).items()))) for n in names),
                tuple((n, runtimes.get(n, r)) for n, r in configured),
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
        self._exposure_due = True  # judged again in this same round
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

    # ---- exposure -------------------------------------------------------------------------

    def step_exposure(self, ts_ns: int) -> list[ev.Event]:
        """Each handler's facts again (unchanged inputs are not read again); a KataFactsObserved
        for each handler whose facts changed, `gone` for one no longer configured."""
        self._exposure_due = False
        disc = self.discovery
        if disc is None:
            return []
        he = exposure.host_exposure(self.paths, disc=disc, watch=self.exposure_watch,
                                    log_readings=tuple(self.log_versions[k] for k in sorted(self.log_versions)),
                                    comms=self._comms())
        self.exposure = he
        out: list[ev.Event] = []
        configured = {load.handler for load in disc.loads} if disc.installed else {"default"}
        for f in he.facts:
            if self.facts.get(f.handler) != f:
                self.facts[f.handler] = f
                out.append(ev.KataFactsObserved(ts_ns=ts_ns, source=NAME, facts=f))
        # A handler whose file Kata would refuse keeps its last facts (kata-config-invalid says why).
        for gone in sorted(h for h in self.facts if h not in configured):
            out.append(ev.KataFactsObserved(ts_ns=ts_ns, source=NAME, facts=self.facts.pop(gone), gone=True))
        return out

    def _comms(self) -> Mapping[int, str] | None:
        """Comms the exposure may take as every process's (None: it reads /proc itself): by
        events, the device plugins ProcWatch keeps (no /proc listing every exposure round)."""
        if self.procwatch is not None:
            self.procwatch.plugins_changed = False
            return self.procwatch.plugins
        return self.proc_cache.comms if self.proc_cache.comms else None

    def exposure_round(self, mono: float, *, force: bool = False) -> bool:
        """Whether the exposure is judged this round (its timer fell due, or something it
        depends on changed); the timer is restarted when it fell due."""
        if force or mono >= self._next["exposure"]:
            self._next["exposure"] = mono + self.exposure_interval
            return True
        return self._exposure_due

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
        self._holder_pids = {pid for held in now.values() for pid in held}
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
        reading = kversion.version_from_log_fields(rec.fields) if rec.fields else None
        if reading is not None:
            known = bool(reading.version)
            if self.log_versions.get(known) != reading:
                self.log_versions[known] = reading
                self._exposure_due = True  # judged in the next round, not in a later exposure round
        # Every witness counts: a Kata line announcing a write is that write (attributed to
        # the shim, mode kata-log), beside or instead of eBPF's record of it.
        out.extend(loglines.to_events(rec, ts_ns=ts_ns, source=NAME))

    def step_logs(self, ts_ns: int, timeout: float = 0.0,
                  watermark: Watermark | None = None) -> list[ev.Event]:
        """New log lines as events: files and kmsg stamped `ts_ns`; the journal waited on for
        up to `timeout`, its lines stamped when read (`watermark` says it waits meanwhile)."""
        out: list[ev.Event] = []
        for f in self.log_files:
            for line in f.poll():
                self._matched(loglines.decode_text_line(line, f.origin), ts_ns, out)
        if self.kmsg is not None:
            for raw in self.kmsg.poll():
                self._matched(loglines.decode_kmsg(raw, self.boot_ns), ts_ns, out)
        if self.journal is not None:
            if watermark is not None:
                watermark.waiting()
            entries = self.journal.poll(timeout)
            if watermark is not None:
                watermark.working()
                ts_ns = time.time_ns()  # read now: after the watermark's mark
            for entry in entries:
                self._matched(loglines.decode_journal_entry(entry), ts_ns, out)
            if self.journal.proc is None:  # journalctl exited: start it again a little later
                self.journal_reason = self.journal.reason or "journalctl exited"
                self.journal = None
                self.journal_restarts += 1
                self._next["journal"] = time.monotonic() + self.journal_retry_s
        elif timeout:
            if watermark is not None:
                watermark.waiting()
            time.sleep(timeout)
            if watermark is not None:
                watermark.working()
        return out

    # ---- one round ------------------------------------------------------------------------

    def on_change(self, ts_ns: int, *, config: bool = False, sandboxes: bool = False,
                  holders: bool = False, holders_full: bool = False,
                  exposure: bool = False) -> list[ev.Event]:
        """The one path every change goes through, whatever noticed it (a process event, an
        inotify event, a polling round): re-read what may have changed, in this order, and
        return the events. Facts derived from the configuration, the sandboxes or the
        inventory of holders belong here, after the re-reads they depend on."""
        out: list[ev.Event] = []
        if config:
            out += self.step_config(ts_ns)
        if exposure or self._exposure_due:  # after the configuration it judges
            out += self.step_exposure(ts_ns)
        if sandboxes:
            out += self.step_sandboxes(ts_ns, rescan=False)
        if holders:
            out += self.step_holders(ts_ns, full=holders_full)
        return out

    def step(self, ts_ns: int, mono: float | None = None, *, force: bool = False) -> list[ev.Event]:
        """One polling round: everything due at monotonic time `mono` (all of it when `force`)."""
        mono = time.monotonic() if mono is None else mono
        sb_due = force or mono >= self._next["sandbox"]
        cfg_due = force or mono >= self._next["config"]
        if sb_due or cfg_due:  # config discovery reads KATA_CONF_FILE from the running shims
            self.procs = sandboxes.scan_processes(self.paths, self.proc_cache)
        if cfg_due:
            self._next["config"] = mono + self.config_interval
        if sb_due:
            self._next["sandbox"] = mono + self.sandbox_interval
        holders = full = False
        if force or mono >= self._next["holders"]:
            self._next["holders"] = mono + self.holder_interval
            holders = True
            full = force or mono >= self._next["holders_full"]
            if full:
                self._next["holders_full"] = mono + self.holder_full_interval
        out = self.on_change(ts_ns, config=cfg_due, sandboxes=sb_due, holders=holders, holders_full=full,
                             exposure=self.exposure_round(mono, force=force))
        self.restart_journal(mono)
        out += self.step_logs(ts_ns)
        out += self.refused(ts_ns)
        return out

    def restart_journal(self, mono: float) -> None:
        """Start journalctl again once its retry delay has passed (it exited)."""
        if self.use_journal and self.journal is None and self.journal_restarts and mono >= self._next["journal"]:
            self.start_journal()
            if self.journal is None:
                self._next["journal"] = mono + self.journal_retry_s

    # ---- event mode -----------------------------------------------------------------------

    def start_feed(self) -> changes.ChangeFeed:
        """Open the kernel notifications this host allows (see `changes`) and seed the views
        they keep up to date; `feed.mode` says what it came to."""
        feed = changes.ChangeFeed(self.paths, process_events=self.use_process_events,
                                  use_inotify=self.use_inotify,
                                  log_files=[str(f.path) for f in self.log_files])
        feed.start()
        self.feed = feed if feed.mode != "poll" else None
        feed.proc_interval_s = self.proc_interval
        if feed.proc is not None:
            self.procwatch = sandboxes.ProcWatch(self.paths)
        return feed

    def wants(self) -> list[Any]:
        """The directories the feed must watch for what the source knows now."""
        assert self.feed is not None
        return self.feed.wants(self.discovery, self._state_dirs, self.sandboxes)

    def seed(self, ts_ns: int) -> list[ev.Event]:
        """Event mode's first round: read everything, then watch it, then read again what
        changed in between."""
        if self.procwatch is not None:
            self.procs = self.procwatch.seed()
        else:
            self.procs = sandboxes.scan_processes(self.paths, self.proc_cache)
        out = self.on_change(ts_ns, config=True, sandboxes=True, holders=True, holders_full=True)
        out += self.settle(ts_ns)
        return out + self.watch_exits(ts_ns)

    def watch_exits(self, ts_ns: int) -> list[ev.Event]:
        """Ask the kernel for the exits of the processes that matter now (shims, VMMs,
        containerd, VFIO holders) and of no other; one that already exited before the filter
        took it in is treated as exited (its exit event may have been filtered out)."""
        feed, pw = self.feed, self.procwatch
        if feed is None or feed.proc is None or pw is None or self.exit_filter_error:
            return []
        pids = set(pw.infos) | set(pw.plugins) | self.holder_pids()
        if pids == self._exit_pids:
            return []
        new = pids - (self._exit_pids or set())
        try:
            feed.proc.watch_exits(pids)
        except OSError as exc:
            # Without the filter every exit reaches the agent, as before it: right, only busier.
            self.exit_filter_error = f"{exc.strerror or exc}"
            return []
        self._exit_pids = pids
        # Its exit may have come before the filter took it in (and was dropped): look. A
        # zombie counts as exited (its /proc/<pid> stays until its parent reaps it).
        gone = [pid for pid in sorted(new) if proc.has_exited(self.paths, pid)]
        if not gone:
            return []
        for pid in gone:
            pw.exit(pid)
        self.procs = pw.view()
        out = self.on_change(ts_ns, config=True, sandboxes=True, holders=True)
        return out + self.watch_exits(ts_ns)

    def settle(self, ts_ns: int) -> list[ev.Event]:
        """Place the watches the current view needs; while that placed new ones, read again
        what they cover (a change made before a watch existed is only in that read)."""
        out: list[ev.Event] = []
        assert self.feed is not None
        for _ in range(4):
            moved = self.feed.sync(self.wants())
            if not moved:
                break
            config = "config" in moved
            out += self.on_change(ts_ns, config=config, sandboxes=config or "state" in moved,
                                  holders="holders" in moved)
        return out

    def holder_pids(self) -> set[int]:
        return set(self._holder_pids)

    def feed_round(self, ts_ns: int, mono: float, ready: set[int] | None = None) -> list[ev.Event]:
        """Event mode: what the kernel said since the last round (and what fell due), re-read.
        `ready`: the descriptors poll() reported (None: look at all of them)."""
        feed = self.feed
        assert feed is not None
        ch = feed.read(self._holder_pids, self.procwatch, ready, mono)
        if feed.timers:
            ch.merge(feed.fire(mono))
        out: list[ev.Event] = []
        if self.procwatch is None and mono >= self._next["sandbox"]:
            # inotify+poll: processes polled (no process events); holders as when polling.
            self._next["sandbox"] = mono + self.sandbox_interval
            before = self.procs
            self.procs = sandboxes.scan_processes(self.paths, self.proc_cache)
            if _pids(before) != _pids(self.procs):
                ch.sandboxes = ch.config = True
            if mono >= self._next["holders"]:
                self._next["holders"] = mono + self.holder_interval
                ch.holders = True
                if mono >= self._next["holders_full"]:
                    self._next["holders_full"] = mono + self.holder_full_interval
                    ch.holders_full = True
        lost = ch.lost
        if lost:
            # Notifications were dropped: anything may have changed. Read it all again (the
            # views diff themselves, so only real changes come out) and say so.
            out.append(ev.EventsLost(ts_ns=ts_ns, source=NAME, lost_source=NAME, count=None,
                                     reason=f"{lost}: everything is read again"))
            if self.procwatch is not None:
                self.procwatch.seed()
            if feed.watches is not None:
                feed.watches.invalidate()
            feed.forget()
            ch = changes.Changes(config=True, sandboxes=True, holders=True, holders_full=True)
        if ch and self.procwatch is not None:
            self.procs = self.procwatch.view()
        if ch:
            found = self.on_change(ts_ns, config=ch.config, sandboxes=ch.sandboxes,
                                   holders=ch.holders, holders_full=ch.holders_full)
            found += self.settle(ts_ns)
            out += found
            if lost:
                out.append(ev.Resynced(ts_ns=ts_ns, source=NAME, resynced_source=NAME,
                                       changes=len(found), reason=lost))
            out += self.watch_exits(ts_ns)
        if self.procwatch is not None and self.procwatch.plugins_changed:
            self._exposure_due = True  # a device plugin came or went: judged with its configuration
            out += self.watch_exits(ts_ns)
        if self.exposure_round(mono):
            out += self.step_exposure(ts_ns)
        self.restart_journal(mono)
        if ready is None or ch.logs or not ready.isdisjoint(self.log_fds()):
            out += self.step_logs(ts_ns)
        if self.paths.confined:  # only a confined walk can refuse a path
            out += self.refused(ts_ns)
        return out

    def quiet_wake(self, ready: set[int], mono: float) -> bool:
        """Event mode, woken by the process-events socket alone (or the end of its rest): read it (what it brings waits
        in the feed for the round); True when that is all (no Kata process came or went and
        nothing falls due), so no round runs: the host's other programs exec'ing cost one read
        of their comm each, not a round of the source."""
        feed, pw = self.feed, self.procwatch
        if feed is None or feed.proc is None or pw is None:
            return False
        fd = feed.proc.fileno()
        if not (ready == {fd} or (not ready and feed.proc_resume and mono >= feed.proc_resume)):
            return False  # something else woke it (or a timer other than the socket's rest)
        if feed.read_proc(self._holder_pids, pw, mono):
            return False
        due = self.next_due(mono)
        return due is None or due > 0

    def next_due(self, mono: float) -> float | None:
        """Seconds until the next timer of event mode (None: wait for the kernel only)."""
        due = [d for d in (self.feed.due(mono) if self.feed else None,) if d is not None]
        due.append(self._next["exposure"])
        if self.procwatch is None:
            due.append(self._next["sandbox"])
        if self.use_journal and self.journal is None and self.journal_restarts:
            due.append(self._next["journal"])
        return max(0.0, min(due) - mono) if due else None

    def log_fds(self) -> list[int]:
        out = []
        if self.journal is not None and (fd := self.journal.fileno()) is not None:
            out.append(fd)
        if self.kmsg is not None and self.kmsg.fd is not None:
            out.append(self.kmsg.fd)
        return out

    def refused(self, ts_ns: int) -> list[ev.Event]:
        """Each path refused since the last round (it leads outside --root), as a DecodeFailed."""
        out = refusal_events(self.paths, NAME, ts_ns)
        self.decode_failures += len(out)
        return out

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
            self.feed = None
        if self.journal is not None:
            self.journal.stop()
            self.journal = None
        if self.kmsg is not None:
            self.kmsg.stop()
            self.kmsg = None


def exposure_now(paths: HostPaths) -> exposure.HostExposure | None:
    """Every handler's exposure as the agent would judge it at start (for `check` and `snapshot`):
    one forced round of the watcher, so running shims' KATA_CONF_FILE counts too."""
    w = KataWatcher(paths, {"journal": False, "kmsg": False})
    try:
        w.step(time.time_ns(), force=True)
    finally:
        w.close()
    return w.exposure


@register
class KataSource:
    """Kata configuration, sandboxes, VFIO group holders and Kata's log lines."""

    name: ClassVar[str] = NAME

    def __init__(self, ctx: SourceContext | None = None) -> None:
        self.ctx = ctx or SourceContext()
        check_options(self.name, self.ctx.options, OPTIONS)
        self.watcher: KataWatcher | None = None
        self.watermark = Watermark()
        """How far this source's stream is complete (the runtime's merge reads it)."""

    def probe(self) -> Availability:
        disc = discovery.discover(self.ctx.paths)
        if not disc.installed:
            return Availability(True, "no Kata installed: assuming built-in default cold_plug_vfio = no-port",
                                mode="assumed")
        return Availability(True, f"{len(disc.loads)} Kata runtime handler(s)", mode="configured")

    def run(self, emit: Emit, stop: threading.Event) -> None:
        w = self.watcher = KataWatcher(self.ctx.paths, self.ctx.options)
        w.start_journal()
        feed = w.start_feed()
        logs = "journal" if w.journal else ("kmsg" if w.kmsg else ("files" if w.log_files else "no-logs"))
        reasons = [r for r in (feed.reason,
                               "" if w.journal or not w.use_journal else f"journal not followed: {w.journal_reason}")
                   if r]
        hints = [h for h in (feed.hint, "" if w.journal or not w.use_journal else
                             "name Kata's log files in [sources.kata] log_files, or mount the host's journal under --root")
                 if h]
        emit(ev.SourceStateChanged(
            ts_ns=time.time_ns(), source=NAME, name=NAME, up=True, mode=f"{feed.mode}+{logs}",
            reason="; ".join(reasons), hint="; ".join(hints)))
        try:
            if w.feed is None:
                self._poll(w, emit, stop)
            else:
                self._events(w, emit, stop)
        finally:
            w.close()  # the runtime reports the stop itself

    def _stamped(self, emit: Emit, round_ns: int) -> Emit:
        """`emit` for one round that read with the watermark waiting: the source says it works
        (the mark is the clock) before its first event, and the events the round stamped
        `round_ns` are stamped again with one clock reading taken after the mark (a round's
        events keep sharing their time). Events that carry their own time (a log line's) keep it."""
        wm = self.watermark
        now = 0

        def out(e: ev.Event) -> None:
            nonlocal now
            if not now:
                wm.working()
                now = time.time_ns()
            if e.ts_ns == round_ns:
                e = replace(e, ts_ns=now)
            emit(e)
        return out

    @staticmethod
    def _guarded(emit: Emit, what: str, fn: Any) -> bool:
        """Emit what `fn()` returns; a source never dies of one bad round (False when it failed)."""
        try:
            for e in fn():
                emit(e)
        except Exception as exc:
            emit(ev.DecodeFailed(ts_ns=time.time_ns(), source=NAME, failed_source=NAME,
                                 reason=f"kata {what} failed: {exc!r}"))
            return False
        return True

    def _poll(self, w: KataWatcher, emit: Emit, stop: threading.Event) -> None:
        """The fallback: rounds on timers (no inotify), logs waited on in between."""
        first = True
        wm = self.watermark
        while not stop.is_set():
            wm.working()  # stamped after the mark: the merge never waits for this round's events
            self._guarded(emit, "round", lambda f=first: w.step(time.time_ns(), force=f))
            first = False
            if not self._guarded(emit, "log round",
                                 lambda: w.step_logs(time.time_ns(), timeout=0.1, watermark=wm)):
                time.sleep(0.1)

    def _events(self, w: KataWatcher, emit: Emit, stop: threading.Event) -> None:
        """Event mode: sleep in poll() on the kernel's notifications, the log followers and the
        stop relay; wake only when one of them has something (or a follow-up look is due)."""
        relay = StopRelay(stop)
        wm = self.watermark
        try:
            # The first round reads all of Kata (tens of ms): like every round, with the
            # watermark at the clock, so the inventory the dashboard opens with is not held.
            wm.waiting()
            seed_ns = time.time_ns()
            self._guarded(self._stamped(emit, seed_ns), "first round", lambda: w.seed(seed_ns))
            registered: set[int] = set()
            poller = select.poll()
            while not stop.is_set():
                fds = {relay.fd, *(w.feed.fds(time.monotonic()) if w.feed else ()), *w.log_fds()}
                for fd in fds - registered:
                    poller.register(fd, select.POLLIN)
                for fd in registered - fds:
                    poller.unregister(fd)
                registered = fds
                due = w.next_due(time.monotonic())
                wm.waiting()  # everything read so far is emitted
                ready = {fd for fd, _ in poller.poll(None if due is None else due * 1000 + 1)}
                if stop.is_set():
                    break
                if w.quiet_wake(ready, time.monotonic()):
                    continue  # another program's exec or exit: nothing for a round, nothing emitted
                # The round (re-reading Kata's files, placing watches: milliseconds here, a
                # hundred and more under emulation) runs with the watermark still at the
                # clock, so a uevent that comes meanwhile is not held behind it; the round's
                # events are stamped as they are emitted, after the mark (`_stamped`).
                round_ns = time.time_ns()
                self._guarded(self._stamped(emit, round_ns), "round",
                              lambda r=ready, t=round_ns: w.feed_round(t, time.monotonic(), r))
        finally:
            relay.close()
