"""Benchmark helper, run in a fresh interpreter: make a journal, or time one way of reading it.

`make PATH N [MIX]`: write an agent journal of N events through diag.codec as the agent does:
a header, the inventory (a PF with 64 VFs), then events 1 ms apart. MIX `typical`: per 240
events, one Kata-style VF round trip (Kata log line, link and netdev gone, unbind, vfio nodes,
bind to vfio-pci, back to iavf: 12 events) and 228 link changes of 400 pod veths in 40
namespaces; MIX `dense`: VF round trips only (a finding every few events).
`MODE PATH`: read it as MODE and print `events cpu_seconds wall_seconds maxrss_kb` (CPU time
and peak RSS (VmHWM) of this process: the machine is shared, CPU time is the stable figure):
`floor` = orjson.loads of every line and nothing else; `decode` = diag.codec into events (the
replay's reader: blocks of lines decoded a list at a time); `core` = the same, each list fed to
a fresh Correlator, the CPU time of the feeding alone printed (the core's share of a replay);
`replay` = `vfiowatch postmortem`'s engine (streaming reader, merge, the live Correlator), then
its text report: `replay` prints, after the four figures (its peak RSS before the text), the CPU
seconds of the start (imports, sniffing the input), of the report's building after the stream
(`finish`) and of its text.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the floor's peak RSS holds only orjson
    from diag import events as ev


T0 = 1_795_791_000_000_000_000
"""Stamp of the first event (the inventory); events follow 1 ms apart."""


def inventory() -> ev.InventoryObserved:
    """A PF with 64 VFs, as the sysfs scan reports it."""
    from diag import events as ev

    vfs = [f"0000:3b:{(i >> 3) + 2:02x}.{i & 7}" for i in range(64)]
    pf = "0000:3b:00.0"
    inv = [ev.PciDevice(bdf=pf, vendor="8086", device="1592", class_code="020000", driver="ice",
                        role="pf", sriov_numvfs=64, sriov_totalvfs=128, vfs=tuple(vfs))]
    inv += [ev.PciDevice(bdf=b, vendor="8086", device="1889", class_code="020000", driver="iavf",
                         role="vf", pf=pf, vf_index=i, iommu_group=100 + i,
                         netdevs=(f"ens1f0v{i}",)) for i, b in enumerate(vfs)]
    return ev.InventoryObserved(ts_ns=T0, source="sysfs", devices=tuple(inv))


def events(n: int, mix: str = "typical", t0: int = T0) -> Iterator[ev.Event]:
    """The `n` events after the inventory (see the module docstring for the mixes), stamped
    `t0` + k ms."""
    from diag import events as ev

    vfs = [f"0000:3b:{(i >> 3) + 2:02x}.{i & 7}" for i in range(64)]
    host = ev.NetnsRef(inode=4026531840, is_host=True)
    pods = [ev.NetnsRef(inode=4026532000 + p, pid=20000 + p) for p in range(40)]
    filler = 0 if mix == "dense" else 228
    k = 0
    cycle = 0
    while k < n:
        i = cycle % 64
        bdf, name, group = vfs[i], f"ens1f0v{i}", 100 + i
        idx = 1000 + cycle
        batch: list[dict[str, Any]] = [
            dict(cls=ev.LogLineMatched, source="kata", signature="vfio-bind-override",
                 text="Write vfio-pci to driver_override", origin="journald:kata",
                 level="info", sandbox_id=f"{cycle:064x}", bdf=bdf, pid=3131),
            dict(cls=ev.LinkRemoved, source="links", ifindex=idx, ifname=name, netns=host, bdf=bdf),
            dict(cls=ev.NetdevRemoved, source="uevent", bdf=bdf, ifname=name, ifindex=idx),
            dict(cls=ev.DeviceUnbound, source="uevent", bdf=bdf, previous_driver="iavf"),
            dict(cls=ev.VfioDeviceAdded, source="uevent", bdf=None, group=group,
                 devname=f"vfio/{group}"),
            dict(cls=ev.VfioDeviceAdded, source="uevent", bdf=bdf, devname="vfio-dev/vfio0"),
            dict(cls=ev.DeviceBound, source="uevent", bdf=bdf, driver="vfio-pci",
                 previous_driver="iavf"),
            dict(cls=ev.VfioDeviceRemoved, source="uevent", bdf=bdf, devname="vfio-dev/vfio0"),
            dict(cls=ev.DeviceUnbound, source="uevent", bdf=bdf, previous_driver="vfio-pci"),
            dict(cls=ev.NetdevAdded, source="uevent", bdf=bdf, ifname=name, ifindex=idx + 1),
            dict(cls=ev.DeviceBound, source="uevent", bdf=bdf, driver="iavf",
                 previous_driver="vfio-pci"),
            dict(cls=ev.LinkChanged, source="links", ifindex=idx + 1, ifname=name, netns=host,
                 operstate="UP", carrier=True, admin_up=True,
                 mac=f"02:00:00:00:{i:02x}:{cycle & 0xFF:02x}", bdf=bdf),
        ]
        for j in range(filler):
            v = (cycle * filler + j) % 400
            up = (cycle + j) % 2 == 0
            batch.append(dict(
                cls=ev.LinkChanged, source="links", ifindex=10 + v % 10, ifname=f"eth{v % 10}",
                netns=pods[v // 10], operstate="UP" if up else "DOWN", carrier=up,
                admin_up=True, mac=f"0a:58:0a:00:{v >> 8:02x}:{v & 0xFF:02x}", link_kind="veth"))
        for fields in batch:
            if k >= n:
                return
            k += 1
            cls = fields.pop("cls")
            yield cls(ts_ns=t0 + k * 1_000_000, **fields)
        cycle += 1


def make(path: str, n: int, mix: str = "typical") -> None:
    from diag import codec

    with open(path, "wb") as fh:
        fh.write(codec.dumps(codec.Header(boot_id="bench", started_ns=T0, hostname="bench")))
        fh.write(codec.dumps(inventory()))
        for e in events(n, mix):
            fh.write(codec.dumps(e))


def peak_rss_kb() -> int:
    """VmHWM: this process's peak RSS. Not getrusage's ru_maxrss, which Linux keeps across
    fork+exec, so a probe started by pytest would report pytest's own peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def measure(mode: str, path: str) -> tuple[int, float, float, list[float]]:
    from diag.importers import FileStats, iter_blocks, iter_lines

    t, c = time.perf_counter(), time.process_time()
    n = 0
    extra: list[float] = []
    if mode == "floor":
        import orjson

        for line in iter_lines(path, FileStats(path)):
            orjson.loads(line)
            n += 1
    elif mode == "decode":
        from diag.importers.journal import parse_batches

        for batch in parse_batches(iter_blocks(path, FileStats(path))):
            n += len(batch)
    elif mode == "core":
        from diag.core.correlator import Correlator
        from diag.importers.journal import parse_batches

        feed, clock, fed = Correlator().feed, time.process_time, 0.0
        for batch in parse_batches(iter_blocks(path, FileStats(path))):
            t0 = clock()
            for e in batch:
                feed(e)
            fed += clock() - t0
            n += len(batch)
        return n, fed, time.perf_counter() - t, extra
    elif mode == "replay":
        from diag import postmortem as pm
        from diag.postmortem import output
        from diag.postmortem import replay as _  # noqa: F401 - the module, for its _Feed
        feed_cls = sys.modules["diag.postmortem.replay"]._Feed
        finish, spent = feed_cls.finish, [0.0]

        def timed_finish(self: Any, *args: Any) -> None:
            t0 = time.process_time()
            finish(self, *args)
            spent[0] += time.process_time() - t0

        feed_cls.finish = timed_finish
        start = time.process_time() - c
        c0 = time.process_time()
        inputs = pm.open_inputs([path], pm.Options())
        start += time.process_time() - c0
        report = pm.replay(inputs, pm.Options())
        n = report.events_total
        cpu, wall = time.process_time() - c, time.perf_counter() - t
        rss = peak_rss_kb()  # the replay's own peak: the report's text is built after it
        t0 = time.process_time()
        output.render_text(report)
        return n, cpu, wall, [start, spent[0], time.process_time() - t0, rss]
    else:
        raise SystemExit(f"unknown mode {mode}")
    return n, time.process_time() - c, time.perf_counter() - t, extra


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
    else:
        n, cpu, wall, extra = measure(sys.argv[1], sys.argv[2])
        rss = int(extra.pop()) if sys.argv[1] == "replay" else peak_rss_kb()
        print(n, f"{cpu:.3f}", f"{wall:.3f}", rss, *(f"{x:.3f}" for x in extra))
