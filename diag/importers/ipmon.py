"""Provides the importer of `ip monitor` link output (plain, `-t`, `-ts`, `all-nsid`, `[LINK]` tags).

A message is `[Deleted ]<ifindex>: <ifname>[@<peer>]: <FLAGS> ... state <OPER> ...` followed by
indented lines (`link/ether <mac> ...`). `ip -ts` prefixes `[YYYY-MM-DDTHH:MM:SS.ffffff] `,
`ip -t` puts a `Timestamp: <ctime> <usec> usec` line before each message; both are the
capturing host's local time and are read as UTC (use `--offset` when it was not). Plain output
has no time at all: stamps are then ordinals, and postmortem places the messages by matching
them with timed netdev events. `all-nsid` adds `[nsid N]`; such namespaces have no inode here,
so they get a stand-in identity `nsid:N`. Non-link messages (`[ADDR]`, `[ROUTE]`, ...) are skipped.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator

from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line, register

SOURCE = "links"
HOST = ev.NetnsRef(inode=0, is_host=True)
"""The namespace `ip monitor` ran in, assumed to be the host's."""

_TS_ISO = re.compile(r"^\[(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{1,9})\]\s*")
_TS_LINE = re.compile(r"^Timestamp:\s+\w{3}\s+(\w{3})\s+(\d{1,2})\s+(\d{2}):(\d{2}):(\d{2})\s+(\d{4})\s+(\d{1,6})\s+usec\s*$")
_TAG = re.compile(r"^\[([A-Z]+)\]\s*")
_NSID = re.compile(r"^\[nsid (\d+|current)\]\s*")
_MSG = re.compile(r"^(Deleted\s+)?(\d{1,10}):\s+([^:\s]+):\s+<([A-Z0-9_,\-]*)>(.*)$")
_STATE = re.compile(r"\bstate\s+(\S+)")
_MAC = re.compile(r"^\s+link/\S+\s+((?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2})\b")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def netns_for_nsid(nsid: str | None) -> ev.NetnsRef:
    if nsid is None or nsid == "current":
        return HOST
    n = int(nsid)
    return ev.NetnsRef(inode=-1 - n, name=f"nsid:{n}")


def _utc_ns(y: int, mo: int, d: int, h: int, mi: int, s: int, frac_ns: int) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000_000 + frac_ns


class _Msg:
    __slots__ = ("deleted", "flags", "ifindex", "ifname", "lineno", "mac", "netns", "rest", "ts")

    def __init__(self, ts: int | None, netns: ev.NetnsRef, deleted: bool, ifindex: int,
                 ifname: str, flags: str, rest: str, lineno: int) -> None:
        self.ts, self.netns, self.deleted = ts, netns, deleted
        self.ifindex, self.ifname, self.flags, self.rest = ifindex, ifname, flags, rest
        self.mac = ""
        self.lineno = lineno

    def event(self, ts: int) -> ev.Event:
        if self.deleted:
            return ev.LinkRemoved(ts_ns=ts, source=SOURCE, ifindex=self.ifindex,
                                  ifname=self.ifname, netns=self.netns)
        flags = set(self.flags.split(",")) if self.flags else set()
        m = _STATE.search(self.rest)
        carrier = True if "LOWER_UP" in flags else (False if "NO-CARRIER" in flags else None)
        return ev.LinkChanged(
            ts_ns=ts, source=SOURCE, ifindex=self.ifindex, ifname=self.ifname, netns=self.netns,
            operstate=m.group(1) if m else "", carrier=carrier, admin_up="UP" in flags,
            mac=self.mac.lower(),
        )


def _physical(line: str) -> list[str]:
    """`ip -o` puts a message's continuation lines on its first one after `\\`: split them."""
    if "\\" not in line:
        return [line]
    head, *rest = line.split("\\")
    return [head, *(" " + r if r and r[0] not in " \t" else r for r in rest)]


def parse_ip_monitor(lines: Iterable[str], stats: FileStats | None = None) -> Iterator[ev.Event]:
    """Decode `ip monitor link` text into LinkChanged/LinkRemoved events.

    Stamps are realtime nanoseconds when the output has `-t`/`-ts` stamps; otherwise they are
    ordinals (1, 2, 3, ...) and `stats.clock` says `none`.
    """
    st = stats if stats is not None else FileStats("<ip monitor>")
    parser = _Parser(st)
    for lineno, raw in enumerate(lines, 1):
        st.lines += 1
        for line in _physical(raw.rstrip("\r\n")):
            yield from parser.line(line, lineno)
    yield from parser.end()


class _Parser:
    """The state of one `ip monitor` text: the message being read (its continuation lines may
    follow), the stamp a `Timestamp:` line gave the next one, and the counts of timed and
    untimed messages."""

    def __init__(self, st: FileStats) -> None:
        self.st = st
        self.pending: _Msg | None = None
        self.next_ts: int | None = None
        self.ordinal = 0
        self.timed = self.untimed = 0
        self.skipping = False
        """Inside a message that is not about links (`[ADDR]`, `[ROUTE]`): its lines are skipped."""
        self.last_bad = 0

    def bad(self, lineno: int, why: str, line: str) -> None:
        if lineno != self.last_bad:  # an `ip -o` line is several physical lines: count it once
            self.last_bad = lineno
            self.st.bad(lineno, why, line)

    def emit(self, m: _Msg) -> ev.Event:
        self.ordinal += 1
        if m.ts is None:
            self.untimed += 1
            ts = self.ordinal
        else:
            self.timed += 1
            ts = m.ts
        self.st.events += 1
        return m.event(ts)

    def line(self, line: str, lineno: int) -> Iterator[ev.Event]:
        """One physical line: a continuation, a `Timestamp:` line or a new message."""
        if not line.strip():
            return
        if line[0] in " \t":
            self._continuation(line, lineno)
            return
        if self.pending is not None:
            yield self.emit(self.pending)
            self.pending = None
        self.skipping = False
        tl = _TS_LINE.match(line)
        if tl:
            self._timestamp(tl, line, lineno)
            return
        self._message(line, lineno)

    def end(self) -> Iterator[ev.Event]:
        """The last message, and what the file's clock is."""
        st = self.st
        if self.pending is not None:
            yield self.emit(self.pending)
        timed, untimed = self.timed, self.untimed
        if timed and untimed:
            st.note(f"{untimed} message(s) had no timestamp among {timed} stamped ones")
        st.clock = ("realtime" if timed and not untimed else
                    ("none" if untimed and not timed else st.clock))

    def _continuation(self, line: str, lineno: int) -> None:
        if self.pending is not None:
            mm = _MAC.match(line)
            if mm and not self.pending.mac:
                self.pending.mac = mm.group(1)
        elif not self.skipping:
            self.bad(lineno, "continuation line without a message", line)

    def _timestamp(self, tl: re.Match[str], line: str, lineno: int) -> None:
        """`ip -t`'s `Timestamp: <ctime> <usec> usec` line: the next message's stamp."""
        mon, d, h, mi, s, y, us = tl.groups()
        if mon not in _MONTHS:
            self.bad(lineno, "bad month in Timestamp line", line)
            return
        self.next_ts = _utc_ns(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s),
                               int(us) * 1000)

    def _message(self, line: str, lineno: int) -> None:
        """`[-ts stamp] [nsid N] [LINK] [Deleted ]<ifindex>: <ifname>: <FLAGS> ...`."""
        rest = line
        ts, self.next_ts = self.next_ts, None
        mi_ = _TS_ISO.match(rest)
        if mi_:
            y, mo, d, h, mn, s, frac = mi_.groups()
            try:
                ts = _utc_ns(int(y), int(mo), int(d), int(h), int(mn), int(s),
                             int(frac.ljust(9, "0")[:9]))
            except (ValueError, OverflowError):
                self.bad(lineno, "bad -ts timestamp", line)
                return
            rest = rest[mi_.end():]
        nsid = None
        for _ in range(2):  # `[nsid N]` and `[LINK]` may come in either order
            mt = _TAG.match(rest)
            if mt:
                if mt.group(1) != "LINK":
                    self.skipping = True
                    return
                rest = rest[mt.end():]
            mn_ = _NSID.match(rest)
            if mn_:
                nsid = mn_.group(1)
                rest = rest[mn_.end():]
        m = _MSG.match(rest)
        if not m:
            self.bad(lineno, "not an ip monitor link message", line)
            return
        deleted, ifindex, name, flags, tail = m.groups()
        ifname = name.rsplit("@", 1)[0] if "@" in name else name
        self.pending = _Msg(ts, netns_for_nsid(nsid), bool(deleted), int(ifindex), ifname,
                            flags, tail, lineno)


class _IpMonImporter:
    name = "ipmon"
    description = "ip monitor link output (plain, -t, -ts, all-nsid)"

    def sniff(self, head: list[str]) -> bool:
        hits = 0
        for line in head[:100]:
            s = _TS_ISO.sub("", line, count=1)
            s = _TAG.sub("", s, count=1)
            s = _NSID.sub("", s, count=1)
            if _MSG.match(s):
                hits += 1
            elif _TS_LINE.match(line) or not line.strip() or line[:1] in " \t":
                continue
            else:
                return False
        return hits > 0

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime")
        # The clock is known only after reading; postmortem reads stats.clock at the end.
        stats.clock = "realtime"

        def gen() -> Iterator[ev.Event]:
            yield from parse_ip_monitor((decode_line(b) for b in lines), stats)
            parsed.clock = stats.clock

        parsed.events = gen()
        parsed.ordered = False
        return parsed


register(_IpMonImporter())
