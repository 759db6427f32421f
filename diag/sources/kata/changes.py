"""Provides the Kata source's change feed: process events and inotify turned into what to re-read.

Instead of re-reading /proc, the state directories and the configuration on a timer, the kata
source waits on two kernel feeds and re-reads only what one of them says changed:

* process events (`diag.sources.procevents`, the proc connector): a Kata shim, QEMU or
  containerd exec'ing or exiting -> the sandboxes (and the configuration, which a shim's
  KATA_CONF_FILE and runtime can change; and, after a VMM starts, its VFIO groups);
* inotify (`diag.sources.inotify`) on every directory of the configuration search path and
  `config.d`, containerd's configuration and imports, `/run/vc/sbs`, `/run/vc/vm`, `/run/kata`
  and each sandbox's directory in them, containerd's bundle directory, `/dev/vfio` (opens and
  last closes of a group node: a holder came or went) and the directories of configured log
  files. A directory that does not exist yet is watched through its nearest existing parent.

Modes, said in the source's state (`events`, `inotify+poll`, `poll`) with the reason for
anything less than `events`: without process events (a pod without hostPID, a kernel without
CONFIG_PROC_EVENTS, a kernel before 6.6 without CAP_NET_ADMIN) the processes are polled every
`sandbox_interval_s`; without inotify everything is polled as before. The timers left in event
mode are the follow-up looks at a new VMM's VFIO groups (it opens them after its exec) and
the journal follower's restart.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from diag.common.paths import HostPaths
from diag.sources import proc, procevents
from diag.sources.inotify import (
    CHANGES,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_OPEN,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    OPENS,
    Inotify,
    InotifyEvent,
    Want,
    WatchSet,
)
from diag.sources.kata import sandboxes
from diag.sources.kata.discovery import Discovery

PROC_INTERVAL_S = 0.25
"""The process-events socket is read as soon as an exec or exit comes while its reads that
found events come on average at least this far apart (a token bucket holding one second's
worth: a shim's exec on a host that execs less often than that is read at once); beyond that
it rests until they do, its events waiting in the kernel's buffer, so an exec storm wakes the
source at most about 1/PROC_INTERVAL_S times a second. A read that finds nothing of Kata's is
no round of the source (`ChangeFeed.read_proc`). Why not shorter: each wake costs its cold
caches (~200 us of CPU here under load, a few execs read per wake or one), so the budget is
what bounds the idle CPU on a host that execs all the time (docs/performance.md)."""
VMM_HOLDER_LOOKS_S = (0.2, 1.0, 5.0)
"""After a VMM execs, its VFIO groups are looked at after these delays (it opens them while it
starts; a /dev/vfio under another mount namespace sends no inotify event)."""


_PERSIST = frozenset({"persist.json"})
_STATE = frozenset({"state.json"})
_PID = frozenset({"pid"})
_BUNDLE = frozenset({"config.json", "shim-binary-path"})
_VFIO = Want("/dev/vfio", None, "holders", CHANGES | OPENS)
_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT | IN_Q_OVERFLOW


@dataclass(slots=True)
class Changes:
    """What a batch of kernel notifications says must be re-read."""

    config: bool = False
    sandboxes: bool = False
    holders: bool = False
    holders_full: bool = False
    """Every process's descriptors (an unknown process opened a group node)."""
    logs: bool = False
    lost: str = ""
    """Why the feed lost notifications (the caller resyncs everything and says so)."""
    why: list[str] = field(default_factory=list)
    """What triggered it (for the bench and the debug log)."""

    def __bool__(self) -> bool:
        return self.config or self.sandboxes or self.holders or self.logs or bool(self.lost)

    def merge(self, other: Changes) -> None:
        self.config |= other.config
        self.sandboxes |= other.sandboxes
        self.holders |= other.holders
        self.holders_full |= other.holders_full
        self.logs |= other.logs
        self.lost = self.lost or other.lost
        self.why += other.why


class ChangeFeed:
    """The kernel notifications of one run of the kata source (see the module docstring)."""

    def __init__(self, paths: HostPaths, *, process_events: bool = True, use_inotify: bool = True,
                 log_files: Iterable[str] = (), proc_interval_s: float = PROC_INTERVAL_S) -> None:
        self.paths = paths
        self.proc_interval_s = proc_interval_s
        self.proc_resume = 0.0
        """The process-events socket rests until then (0: it is polled), see PROC_INTERVAL_S."""
        self.proc_tokens = 1.0 / proc_interval_s if proc_interval_s > 0 else 0.0
        self.proc_tokens_at = 0.0
        self.pending = Changes()
        """What reads of the process-events socket between two rounds found (`read_proc`)."""
        self.want_proc = process_events
        self.want_inotify = use_inotify
        self.log_files = tuple(str(p) for p in log_files)
        self.proc: procevents.ProcEventSocket | None = None
        self.inotify: Inotify | None = None
        self.watches: WatchSet | None = None
        self.log_inotify: Inotify | None = None
        self.log_watches: WatchSet | None = None
        self.mode = "poll"
        self.reason = ""
        self.hint = ""
        self.timers: list[tuple[float, str, int]] = []
        """(monotonic due, what, pid): follow-up looks."""
        self.stats = {"proc_events": 0, "inotify_events": 0, "wakeups": 0, "rounds": 0}
        self._config_cache: tuple[tuple[str, ...], tuple[Want, ...]] | None = None
        """The configuration's wants and the watched paths they were read for."""
        self._namespaces: tuple[str, ...] | None = None
        """containerd's namespaces in the bundle directory (None: list them again)."""
        self._last_wants: tuple[tuple[Want, ...], sandboxes.StateDirs, tuple[str, ...], frozenset[str],
                                list[Want]] | None = None
        """The last list `wants` built and what it was built from."""
        self._synced: list[Want] | None = None
        self._logs_synced = False
        """The list the last `sync` placed (a sync of the same list, nothing pending, is free)."""
        self.wants_built = 0
        self.config_wants_read = 0
        """How often `wants` ran, and how often it read the configuration's part (tests)."""

    # ---- start / stop ---------------------------------------------------------------------

    def start(self) -> None:
        """Open what the kernel allows; `mode`, `reason` and `hint` say what it came to."""
        reasons: list[str] = []
        if self.want_inotify:
            try:
                self.inotify = Inotify()
                self.watches = WatchSet(self.inotify, self.paths)
                if self.log_files:
                    self.log_inotify = Inotify()
                    self.log_watches = WatchSet(self.log_inotify, HostPaths())
            except OSError as exc:
                self.close()
                reasons.append(f"inotify unavailable ({exc.strerror or exc})")
        else:
            reasons.append("inotify = false in [sources.kata]")
        if self.want_proc and self.inotify is not None:
            try:
                sock = procevents.ProcEventSocket()
                sock.subscribe()
                self.proc = sock
            except procevents.ProcEventsUnavailable as exc:
                reasons.append(f"no process events: {exc.strerror}")
        elif not self.want_proc:
            reasons.append("process_events = false in [sources.kata]")
        if self.inotify is None:
            self.mode = "poll"
        elif self.proc is None:
            self.mode = "inotify+poll"
        else:
            self.mode = "events"
        self.reason = "; ".join(reasons)
        if self.mode != "events":
            what = "everything" if self.mode == "poll" else "processes"
            self.reason = f"polling {what}: {self.reason}"
            self.hint = ("run in the host's pid namespace (hostPID: true) on a kernel with "
                         "CONFIG_PROC_EVENTS (6.6+, or CAP_NET_ADMIN before)"
                         if self.mode == "inotify+poll" else
                         "give the agent inotify (fs.inotify.max_user_instances) and the "
                         "host's pid namespace")

    def close(self) -> None:
        for closer in (self.proc, self.inotify, self.log_inotify):
            if closer is not None:
                closer.close()
        self.proc = None
        self.inotify = self.log_inotify = None
        self.watches = self.log_watches = None

    def fds(self, mono: float) -> list[int]:
        """What to poll now: the process-events socket only once its pause is over."""
        out = [x.fileno() for x in (self.inotify, self.log_inotify) if x is not None]
        if self.proc is not None and mono >= self.proc_resume:
            out.append(self.proc.fileno())
        return out

    # ---- what to watch --------------------------------------------------------------------

    def wants(self, disc: Discovery | None, state: sandboxes.StateDirs,
              sandbox_ids: Iterable[str]) -> list[Want]:
        """Every directory whose change can change what the source reports.

        Built from what changed, not from a walk: the configuration's part is read again (an
        is_dir per watched path) only for a new discovery or after an inotify event tagged
        `config`, the containerd namespaces of the bundle directory (a listdir) only after one
        tagged `state`; the rest is the sandbox ids and state directories the caller knows.
        Each such directory is watched (or its parent), so a change that would change this
        list always wakes a round that drops the cached part (`_fs_changes`)."""
        config = self._config_wants(disc)
        if self._namespaces is None:
            self._namespaces = tuple(sandboxes.bundle_namespaces(self.paths))
        namespaces = self._namespaces
        ids = frozenset(sandbox_ids)
        last = self._last_wants
        if last is not None and last[0] is config and last[1] is state and last[2] is namespaces \
                and last[3] == ids:
            return last[4]  # the same list: `sync` knows it placed it
        out = list(config)
        for d in (sandboxes.GO_SBS, sandboxes.GO_VM, sandboxes.RS_STATE, sandboxes.BUNDLES):
            out.append(Want(d, None, "state"))
        for sid in state.go:
            out.append(Want(f"{sandboxes.GO_SBS}/{sid}", _PERSIST, "state"))
        for sid in state.rs:
            out.append(Want(f"{sandboxes.RS_STATE}/{sid}", _STATE, "state"))
        for sid in state.vm_pids:
            out.append(Want(f"{sandboxes.GO_VM}/{sid}", _PID, "state"))
        for ns in namespaces:
            out.append(Want(f"{sandboxes.BUNDLES}/{ns}", None, "state"))
        for sid in ids:
            for ns in namespaces:
                out.append(Want(f"{sandboxes.BUNDLES}/{ns}/{sid}", _BUNDLE, "state"))
        out.append(_VFIO)
        self.wants_built += 1
        self._last_wants = (config, state, namespaces, ids, out)
        return out

    def _config_wants(self, disc: Discovery | None) -> tuple[Want, ...]:
        """The configuration's directories (cached per set of watched paths until a `config`
        event: a rediscovery that watches the same paths reads nothing)."""
        if disc is None:
            return ()
        cached = self._config_cache
        if cached is not None and cached[0] == disc.watch:
            return cached[1]
        out: list[Want] = []
        by_dir: dict[str, set[str]] = {}
        for p in disc.watch:
            if not p.startswith("/"):
                continue
            p = posixpath.normpath(p)
            if self.paths.is_dir(p):
                out.append(Want(p, None, "config"))
            by_dir.setdefault(posixpath.dirname(p), set()).add(posixpath.basename(p))
        out += [Want(d, frozenset(n), "config") for d, n in by_dir.items()]
        self._config_cache = (disc.watch, tuple(out))
        self.config_wants_read += 1
        return self._config_cache[1]

    def forget(self) -> None:
        """Read the wanted directories again at the next `wants` (notifications were lost)."""
        self._config_cache = None
        self._namespaces = None
        self._synced = None
        self._logs_synced = False

    def sync(self, wants: Iterable[Want]) -> set[str]:
        """Place the watches (before the caller reads: a change after this is noticed, one
        before it is in what the caller reads). Returns the tags of the watches placed or
        moved (empty: none), which is what the caller must read again."""
        moved: set[str] = set()
        if self.watches is not None and (wants is not self._synced or not self.watches.idle):
            if self.watches.sync(wants):
                moved = set(self.watches.moved_tags)
            self._synced = wants if isinstance(wants, list) else None
        if self.log_watches is not None and (not self._logs_synced or not self.log_watches.idle):
            self._logs_synced = True
            self.log_watches.sync(Want(posixpath.dirname(posixpath.abspath(f)),
                                       frozenset({posixpath.basename(f)}), "logs", CHANGES | IN_MODIFY)
                                  for f in self.log_files)
        return moved

    # ---- reading --------------------------------------------------------------------------

    def read_proc(self, watched_pids: set[int], procs: sandboxes.ProcWatch, mono: float) -> bool:
        """Read the process-events socket into `pending` (taken by the next `read`); True when
        something there is for a round. The socket then rests while its reads that found
        events come faster than PROC_INTERVAL_S on average (see there)."""
        assert self.proc is not None
        self.stats["wakeups"] += 1
        seen = self.stats["proc_events"]
        ch = self._proc_changes(watched_pids, procs)
        self.pending.merge(ch)
        if self.stats["proc_events"] != seen or ch.lost:
            self._spend(mono)
        else:
            self.proc_resume = 0.0  # nothing came: the poll waits for the next exec itself
        return bool(self.pending) or procs.plugins_changed

    def _spend(self, mono: float) -> None:
        interval = self.proc_interval_s
        if interval <= 0:
            self.proc_resume = 0.0
            return
        cap = max(1.0, 1.0 / interval)
        tokens = min(cap, self.proc_tokens + (mono - self.proc_tokens_at) / interval) - 1.0
        self.proc_tokens, self.proc_tokens_at = tokens, mono
        self.proc_resume = 0.0 if tokens >= 0 else mono - tokens * interval

    def read(self, watched_pids: set[int], procs: sandboxes.ProcWatch | None,
             ready: set[int] | None = None, mono: float = 0.0) -> Changes:
        """Everything the kernel queued since the last read (of the descriptors in `ready`:
        all when None), as what to re-read."""
        ch, self.pending = self.pending, Changes()
        self.stats["rounds"] += 1
        if self.proc is not None and procs is not None and (
                ready is None or self.proc.fileno() in ready or (self.proc_resume and mono >= self.proc_resume)):
            # Read too when its rest is over (this wake is for that): what came meanwhile.
            self.read_proc(watched_pids, procs, mono)
            ch.merge(self.pending)
            self.pending = Changes()
        else:
            self.stats["wakeups"] += 1
        if self.inotify is not None and self.watches is not None and (ready is None or self.inotify.fd in ready):
            events = self.inotify.read()
            self.stats["inotify_events"] += len(events)
            if events:
                ch.merge(self._fs_changes(self.watches.tags(events)))
        if (self.log_inotify is not None and self.log_watches is not None
                and (ready is None or self.log_inotify.fd in ready)
                and self.log_watches.tags(self.log_inotify.read())):
            ch.logs = True
        return ch

    def _proc_changes(self, watched_pids: set[int], procs: sandboxes.ProcWatch) -> Changes:
        assert self.proc is not None
        ch = Changes()
        events, lost = self.proc.read()
        self.stats["proc_events"] += len(events)
        if lost:
            ch.lost = "ENOBUFS on the process-events socket: the kernel dropped process events"
            return ch
        for e in events:
            if not e.is_process:  # another thread of a process: its exec is reported as the process's
                continue
            if e.kind == "exec":
                got = procs.exec(e.tgid)
                if got is False:
                    continue
                # A shim's KATA_CONF_FILE and runtime, and containerd's --config, feed the
                # configuration's discovery (its fingerprint skips a re-read when they did not).
                ch.sandboxes = ch.config = True
                ch.why.append(f"exec {e.tgid}")
                if got is not True and got.comm not in ("containerd", proc.KATA_SHIM_COMM):
                    self.later(e.tgid)  # a VMM: it opens its VFIO groups while it starts
            elif e.kind == "exit":
                info = procs.exit(e.tgid)
                if info is not None:
                    ch.sandboxes = ch.config = True
                    ch.why.append(f"exit {e.tgid}")
                if e.tgid in watched_pids:
                    ch.holders = True
                    ch.why.append(f"holder exit {e.tgid}")
        return ch

    def _fs_changes(self, tagged: dict[str, list[InotifyEvent]]) -> Changes:
        ch = Changes()
        if "config" in tagged:
            self._config_cache = None  # a watched path may have become (or stopped being) a directory
            ch.config = ch.sandboxes = True  # a new configuration applies to sandboxes seen from now
            ch.why.append("config dir")
        if "state" in tagged:
            self._namespaces = None  # a containerd namespace may have come or gone
            ch.sandboxes = True
            ch.why.append("state dir")
        holders = tagged.get("holders")
        if holders is not None:
            for e in holders:
                if e.is_dir or not e.name:
                    if not e.name and e.mask & _GONE:  # the directory itself moved or vanished
                        ch.holders = True
                    continue  # (an open of the directory itself: a listing, the agent's own)
                if not e.name.isdigit():
                    continue  # /dev/vfio/vfio, the container node: no group
                ch.holders = True
                ch.holders_full |= bool(e.mask & IN_OPEN)  # the opener can be any process
                ch.why.append(f"/dev/vfio/{e.name}")
        if self.watches is not None and self.inotify is not None and self.inotify.overflows:
            self.forget()
            ch.lost = ch.lost or "inotify queue overflow"
            self.inotify.overflows = 0
        return ch

    # ---- timers ---------------------------------------------------------------------------

    def later(self, pid: int) -> None:
        now = time.monotonic()
        for d in VMM_HOLDER_LOOKS_S:
            self.timers.append((now + d, "holders", pid))
        self.timers.sort()

    def due(self, mono: float) -> float | None:
        """The next monotonic time something falls due (a follow-up look, the end of the
        process-events socket's rest)."""
        due = [self.timers[0][0]] if self.timers else []
        if self.proc is not None and self.proc_resume:
            due.append(self.proc_resume)
        return min(due) if due else None

    def fire(self, mono: float) -> Changes:
        ch = Changes()
        while self.timers and self.timers[0][0] <= mono:
            _, what, pid = self.timers.pop(0)
            if what == "holders":
                ch.holders = True
                ch.why.append(f"vmm {pid} groups")
        return ch
