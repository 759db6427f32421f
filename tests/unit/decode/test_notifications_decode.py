"""The proc connector and inotify decoders on bytes recorded on this machine kind."""

from __future__ import annotations

import errno
import struct

import pytest

from diag.sources import inotify, procevents
from diag.sources.inotify import MalformedInotify, decode_inotify
from diag.sources.procevents import MalformedProcEvent, control_message, decode_proc_events
from tests.conftest import FIXTURES
from tests.fixtures.dumps import load_dump


def _proc(name: str) -> list[procevents.ProcEvent]:
    out: list[procevents.ProcEvent] = []
    for rec in load_dump(FIXTURES / "proc-connector" / f"{name}.dump"):
        got = decode_proc_events(rec.data)
        assert len(got) == 1  # the kernel sends one event per datagram
        out += got
    return out


def test_every_kind_the_recorder_caused_decodes_with_its_fields() -> None:
    """all.dump: ack, then fork/exec/exit per process; exit status 3 as 768; a thread's exit
    and fork carry pid != tgid; the comm event names the new name."""
    evs = _proc("all")
    ack = evs[0]
    assert (ack.kind, ack.error, ack.pid) == ("ack", 0, 0) and ack.ack > 1
    execs = [e for e in evs if e.kind == "exec"]
    assert len(execs) == 3 and all(e.is_process for e in execs)
    exits = {e.pid: e for e in evs if e.kind == "exit" and e.is_process}
    assert [exits[e.tgid].exit_code for e in execs] == [0, 768, 0]
    assert all(exits[e.tgid].parent_tgid == exits[execs[0].tgid].parent_tgid for e in execs)
    threads = [e for e in evs if not e.is_process]
    assert {e.kind for e in threads} == {"fork", "exit"} and {e.tgid for e in threads} == {execs[2].tgid}
    (comm,) = [e for e in evs if e.kind == "comm"]
    assert (comm.pid, comm.comm) == (execs[2].tgid, "vfw-renamed")
    forks = [e for e in evs if e.kind == "fork" and e.is_process]
    assert [f.pid for f in forks] == [e.tgid for e in execs]


def test_the_exec_exit_filter_leaves_exec_and_exit_only() -> None:
    """exec-exit.dump (the 8-byte proc_input after the 4-byte LISTEN): no fork and no comm
    event reach the socket; exec and exit of every process do, and a thread's exit too."""
    evs = _proc("exec-exit")
    assert evs[0].kind == "ack"
    assert {e.kind for e in evs[1:]} == {"exec", "exit"}
    assert [e.kind for e in evs[1:] if e.is_process] == ["exec", "exit"] * 3
    assert sum(1 for e in evs if not e.is_process) == 1


def test_a_datagram_cut_short_or_from_another_connector_is_refused() -> None:
    """Truncated at every length, or another connector's id: MalformedProcEvent, never a wrong event."""
    data = load_dump(FIXTURES / "proc-connector" / "all.dump")[2].data
    for cut in range(1, len(data)):
        with pytest.raises(MalformedProcEvent):
            decode_proc_events(data[:cut])
    other = data[:16] + struct.pack("=I", 7) + data[20:]
    with pytest.raises(MalformedProcEvent, match="not the proc connector"):
        decode_proc_events(other)


def test_a_refused_subscription_reads_as_an_ack_with_its_errno() -> None:
    """The recorded acknowledgement with its err field set to EPERM (what a kernel before 6.6
    answers without CAP_NET_ADMIN) decodes as ack with error EPERM."""
    ack = load_dump(FIXTURES / "proc-connector" / "all.dump")[0].data
    refused = ack[:procevents.EVENT_DATA] + struct.pack("=I", errno.EPERM) + ack[procevents.EVENT_DATA + 4:]
    (e,) = decode_proc_events(refused)
    assert (e.kind, e.error) == ("ack", errno.EPERM)


def test_control_messages_have_the_layout_the_kernel_accepts() -> None:
    """LISTEN as the 4-byte op (40 bytes in all) and as the 8-byte proc_input (44), with the
    token in cn_msg.ack: the forms the recordings above were subscribed with."""
    four = control_message(procevents.PROC_CN_MCAST_LISTEN, 5, ack=99)
    eight = control_message(procevents.PROC_CN_MCAST_LISTEN, 6,
                            procevents.PROC_EVENT_EXEC | procevents.PROC_EVENT_EXIT)
    assert (len(four), len(eight)) == (40, 44)
    assert struct.unpack_from("=IHHII", four) == (40, 3, 0, 5, 0)
    assert struct.unpack_from("=IIIIHHI", four, 16) == (1, 1, 5, 99, 4, 0, 1)
    assert struct.unpack_from("=HHII", eight, 32) == (8, 0, 1, 0x80000002)


def _decided(exit_pids: set[int] | None) -> list[tuple[str, int, int]]:
    """(kind, pid, tgid) of every recorded datagram of all.dump the exit filter lets through."""
    prog = procevents.exit_filter(exit_pids)
    out = []
    for rec in load_dump(FIXTURES / "proc-connector" / "all.dump"):
        if procevents.run_filter(prog, rec.data):
            (e,) = decode_proc_events(rec.data)
            out.append((e.kind, e.pid, e.tgid))
    return out


def test_the_exit_filter_passes_every_exec_and_the_chosen_processes_exits() -> None:
    """The socket filter on all.dump's datagrams: every exec passes; the exit of a chosen
    process passes, another's does not; forks, a comm event, a thread's exit and the
    acknowledgement never do. None: every process's exit; over MAX_FILTER_PIDS pids the same."""
    evs = _proc("all")
    a, b, c = [e.tgid for e in evs if e.kind == "exec"]
    execs = [("exec", p, p) for p in (a, b, c)]
    got = _decided({b, 999_999})
    assert sorted(got) == sorted([*execs, ("exit", b, b)])
    every = sorted(execs + [("exit", p, p) for p in (a, b, c)])
    assert sorted(_decided(None)) == every
    assert sorted(_decided(set(range(1, procevents.MAX_FILTER_PIDS + 2)) - {a, b, c})) == every
    assert _decided(set()) == execs


def test_the_exit_filter_fits_the_kernel_and_drops_what_it_cannot_read() -> None:
    """At MAX_FILTER_PIDS the program stays under the kernel's 4096 instructions (BPF_MAXINSNS)
    and uses only the opcodes run_filter knows; a datagram shorter than the pid it loads is
    dropped (the kernel does the same), never misread."""
    prog = procevents.exit_filter(range(1, procevents.MAX_FILTER_PIDS + 1))
    assert len(prog) < 4096
    exit_dg = next(r.data for r in load_dump(FIXTURES / "proc-connector" / "all.dump")
                   if decode_proc_events(r.data)[0].kind == "exit")
    assert procevents.run_filter(procevents.exit_filter(None), exit_dg)
    assert not procevents.run_filter(procevents.exit_filter(None), exit_dg[:procevents.EVENT_DATA + 2])


def _ino() -> list[list[inotify.InotifyEvent]]:
    return [decode_inotify(r.data) for r in load_dump(FIXTURES / "inotify" / "dir.dump")]


def test_inotify_records_decode_to_the_actions_taken() -> None:
    """dir.dump, one record per action: names, flags, the rename's shared cookie, the
    watched directory's own removal (name "")."""
    recs = _ino()
    brief = [[(e.flags, e.name) for e in r] for r in recs]
    assert brief[0] == [(("CREATE", "ISDIR"), "sub")]
    assert brief[1] == [(("CREATE",), "persist.json"), (("OPEN",), "persist.json"),
                        (("MODIFY",), "persist.json"), (("CLOSE_WRITE",), "persist.json")]
    moved = [e for e in recs[2] if e.mask & (inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO)]
    assert [(e.name, e.cookie == moved[0].cookie != 0) for e in moved] == [("tmp.json", True), ("state.json", True)]
    assert brief[3] == [(("CREATE",), "link.json")]
    assert brief[4] == [(("OPEN",), "state.json"), (("CLOSE_NOWRITE",), "state.json")]
    assert brief[6][-2:] == [(("DELETE_SELF",), ""), (("IGNORED",), "")]
    assert {e.wd for r in recs for e in r} == {1}


def test_inotify_bytes_cut_inside_an_event_are_refused() -> None:
    """A read() is whole events; bytes cut inside a header or a name raise MalformedInotify."""
    data = load_dump(FIXTURES / "inotify" / "dir.dump")[1].data
    assert len(decode_inotify(data)) == 4
    for cut in (3, 16, 20, 17):
        with pytest.raises(MalformedInotify):
            decode_inotify(data[:cut])
