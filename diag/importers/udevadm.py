"""Provides the importer of `udevadm monitor` output (--kernel and/or --udev, with or without --property).

Each record opens with `KERNEL[<monotonic s>] <action> <devpath> (<subsystem>)` (or `UDEV  [...]`)
and, with --property, is followed by the uevent's KEY=VALUE lines and a blank line. Both are
turned back into the raw uevent datagram and decoded by the live source's own `decode_uevent`
and `DeviceTracker` (so an unbind gets its previous driver exactly as live).
Without --property a `bind` line names no driver: it is inferred from what the same device
did since its last unbind (a `vfio-dev` node means vfio-pci; a netdev means its host driver,
known only when an earlier line named it), else left empty. When a file holds both KERNEL and
UDEV records of one uevent, the KERNEL one is kept. Stamps are CLOCK_MONOTONIC.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator

from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line, register
from diag.sources.uevent import decode as uevent

_HEAD = re.compile(r"^(KERNEL|UDEV)\s*\[(\d{1,12})\.(\d{1,9})\]\s+(\S+)\s+(\S+)\s+\((\S*)\)\s*$")
_PROP = re.compile(r"^([A-Za-z0-9_.]+)=(.*)$")


def datagram(env: dict[str, str]) -> bytes:
    """The raw kernel uevent (`ACTION@DEVPATH\\0KEY=VALUE\\0...`) an environment came from."""
    head = f"{env.get('ACTION', '')}@{env.get('DEVPATH', '')}"
    body = "".join(f"{k}={v}\0" for k, v in env.items())
    return f"{head}\0{body}".encode("utf-8", "surrogateescape")


def events_from_env(env: dict[str, str], ts_ns: int) -> ev.Event | None:
    """Map one uevent environment to the live agent's event, through the live decoder itself."""
    return uevent.decode_uevent(datagram(env), ts_ns)


def _stamp(sec: str, frac: str) -> int:
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


class _Inference:
    """Per-device memory that names the driver of a `bind` line printed without properties."""

    def __init__(self) -> None:
        self.vfio: set[str] = set()
        self.net: set[str] = set()
        self.known: dict[str, str] = {}
        self.inferred = 0

    def see(self, event: ev.Event) -> ev.Event:
        if isinstance(event, ev.VfioDeviceAdded) and event.bdf:
            self.vfio.add(event.bdf)
        elif isinstance(event, ev.NetdevAdded) and event.bdf:
            self.net.add(event.bdf)
        elif isinstance(event, ev.DeviceUnbound):
            self.vfio.discard(event.bdf)
            self.net.discard(event.bdf)
        elif isinstance(event, ev.DeviceBound):
            bdf = event.bdf
            driver = event.driver
            if not driver:
                if bdf in self.vfio:
                    driver = "vfio-pci"
                elif bdf in self.net:
                    driver = self.known.get(bdf, "")
                if driver:
                    self.inferred += 1
                    event = ev.DeviceBound(ts_ns=event.ts_ns, source=event.source,
                                           synthetic=event.synthetic, bdf=bdf, driver=driver)
            if driver and driver != "vfio-pci":
                self.known[bdf] = driver
            self.vfio.discard(bdf)
            self.net.discard(bdf)
        return event


def parse_udevadm(lines: Iterable[str], stats: FileStats | None = None) -> Iterator[ev.Event]:
    """Decode `udevadm monitor` text lines into events, stamped in monotonic nanoseconds."""
    st = stats if stats is not None else FileStats("<udevadm>")
    records = _Records(st)
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        st.lines += 1
        if not line.strip():
            yield from records.close()
            continue
        m = _HEAD.match(line)
        if m:
            yield from records.close()
            records.open(m, lineno)
            continue
        if records.head is not None and records.property(line, lineno):
            continue
        if line.startswith(("monitor will print", "KERNEL - ", "UDEV - ")):
            continue
        st.bad(lineno, "not a udevadm monitor record or property", line)
    yield from records.close()
    if records.infer.inferred:
        st.note(f"{records.infer.inferred} bind line(s) without --property: driver inferred "
                "from the device's vfio-dev or netdev nodes")


class _Records:
    """The records of one capture: the one being read (its header line and --property lines),
    the KERNEL records already taken (so UDEV's copy of each is dropped), and the device state
    that completes binds and unbinds."""

    def __init__(self, st: FileStats) -> None:
        self.st = st
        self.infer = _Inference()
        self.tracker = uevent.DeviceTracker()
        self.unknown: set[str] = set()
        """Devices whose driver a bind printed without --property left unknown."""
        self.kernel_seen: deque[tuple[str, str, str]] = deque(maxlen=512)
        self.kernel_keys: set[tuple[str, str, str]] = set()
        self.any_kernel = False
        self.head: tuple[str, int, dict[str, str]] | None = None
        self.head_line = 0

    def open(self, m: re.Match[str], lineno: int) -> None:
        """A record's header line: `KERNEL[secs] action devpath (subsystem)`."""
        origin, sec, frac, action, devpath, subsystem = m.groups()
        self.head = (origin, _stamp(sec, frac),
                     {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": subsystem})
        self.head_line = lineno

    def property(self, line: str, lineno: int) -> bool:
        """A `KEY=VALUE` line of the open record (--property); False when it is not one."""
        assert self.head is not None
        p = _PROP.match(line)
        if not p:
            return False
        k, v = p.groups()
        env = self.head[2]
        if k in ("ACTION", "DEVPATH", "SUBSYSTEM") and env.get(k) not in (None, v):
            self.st.bad(lineno, f"{k} disagrees with the record line {self.head_line}", line)
            return True
        if k == "DEVNAME" and v.startswith("/dev/"):
            v = v[5:]  # udevadm prints the node path; the kernel sends it relative
        env[k] = v
        return True

    def close(self) -> Iterator[ev.Event]:
        """The open record as its event (none for UDEV's copy of a kernel record taken)."""
        head, self.head = self.head, None
        if head is None:
            return
        origin, ts, env = head
        key = (env.get("SEQNUM", ""), env.get("ACTION", ""), env.get("DEVPATH", ""))
        if origin == "KERNEL":
            self.any_kernel = True
            if len(self.kernel_seen) == self.kernel_seen.maxlen:
                self.kernel_keys.discard(self.kernel_seen[0])
            self.kernel_seen.append(key)
            self.kernel_keys.add(key)
        elif self.any_kernel and (key in self.kernel_keys
                                  or ("", key[1], key[2]) in self.kernel_keys):
            # UDEV's copy of a kernel event already taken (SEQNUM matches with --property;
            # action + devpath without it).
            return
        try:
            e = events_from_env(env, ts)
        except uevent.MalformedUevent as exc:
            self.st.bad(self.head_line, str(exc), f"{origin}[{ts / 1e9:.6f}] {key[1]} {key[2]}")
            return
        if e is None:
            return
        self.st.events += 1
        yield self._forget(self.tracker.apply(self.infer.see(e)))

    def _forget(self, e: ev.Event) -> ev.Event:
        """A bind printed without its driver leaves the tracker guessing from an older driver;
        until the next bind the previous driver is honestly unknown."""
        unknown = self.unknown
        if isinstance(e, ev.DeviceBound):
            was_unknown = e.bdf in unknown
            if e.driver:
                unknown.discard(e.bdf)
            else:
                unknown.add(e.bdf)
            if was_unknown and e.previous_driver is not None:
                return ev.DeviceBound(ts_ns=e.ts_ns, source=e.source, synthetic=e.synthetic,
                                      bdf=e.bdf, driver=e.driver)
        elif isinstance(e, ev.DeviceUnbound) and e.bdf in unknown and e.previous_driver:
            return ev.DeviceUnbound(ts_ns=e.ts_ns, source=e.source, synthetic=e.synthetic,
                                    bdf=e.bdf)
        return e


class _UdevadmImporter:
    name = "udevadm"
    description = "udevadm monitor output (--kernel/--udev, --property)"

    def sniff(self, head: list[str]) -> bool:
        """udevadm's banner or one record line within the first 200 lines."""
        return any(line.startswith("monitor will print the received events") or _HEAD.match(line)
                   for line in head[:200])

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        return Parsed(events=parse_udevadm((decode_line(b) for b in lines), stats),
                      clock="monotonic")


register(_UdevadmImporter())
