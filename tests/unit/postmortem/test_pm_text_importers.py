"""The importers of pasted text (issue 17) on real pastes: times, prefixes, wraps, fragments, listings."""

from __future__ import annotations

import shutil
from pathlib import Path

from diag import events as ev
from diag import postmortem as pm
from diag.importers import FileStats, Parsed, iter_lines, sniff
from diag.importers.describe import parse_describe
from diag.importers.journalctl import parse_journalctl
from diag.importers.klog import parse_klog
from diag.importers.lspci import parse_lspci
from diag.importers.ps import parse_ps
from tests.conftest import FIXTURES

REAL = FIXTURES / "postmortem-real"
INC = FIXTURES / "postmortem-incidents"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _journalctl(path: Path) -> tuple[list[ev.Event], Parsed, FileStats]:
    st = FileStats(str(path))
    parsed = Parsed(events=(), clock="realtime")
    return list(parse_journalctl(_lines(path), st, parsed)), parsed, st


def test_short_prefix_gets_the_hosts_zone_from_the_lines_own_time() -> None:
    """kata #4211: `Jun 13 17:28:07 host kata[17793]: time="...+08:00"`: the shim's lines keep
    their exact time; the prefix is read as UTC+08:00, said in a note."""
    events, _, st = _journalctl(REAL / "kata-4211-group-not-viable-hotplug" / "journalctl-t-kata.txt")
    bad = next(e for e in events if isinstance(e, ev.LogLineMatched))
    assert bad.signature == "vfio-group-not-viable" and bad.ts_ns == 1655112487508633146
    assert any("UTC+08:00" in n for n in st.notes)


def test_kernel_lines_between_kata_lines_get_their_time_from_the_prefix() -> None:
    """kata #10622: `Dec 06 09:04:26 208 kernel: vfio-pci ...: BAR 3: can't reserve` has no
    time= of its own: its prefix, in the year and zone of the Kata lines, places it."""
    events, _, _ = _journalctl(REAL / "kata-10622-multiple-address-spaces" / "journalctl.txt")
    bar = next(e for e in events if isinstance(e, ev.LogLineMatched)
               and e.signature == "vfio-bar-reserve-failed")
    assert bar.origin == "journalctl:kernel" and bar.ts_ns == 1733475866000000000


def test_entries_pasted_on_one_line_are_split_and_wrapped_lines_joined() -> None:
    """runtime#2774's journal lost its newlines (three entries on one line, a fourth cut and
    wrapped); kata #12091's lines were wrapped by a terminal inside a sandbox id."""
    st = FileStats("x")
    items = list(__import__("diag.importers.journalctl", fromlist=["entries"]).entries(
        _lines(REAL / "kata-2774-vfio-operation-not-permitted" / "kata-journal-joined.txt"), st))
    kata = [i for i in items if not isinstance(i, tuple)]
    assert len(kata) == 4 and kata[3].text.endswith("source=virtcontainers subsyst")
    assert "3656ccc016ed2c4efca0795472f14e055c89be54fd8ef260e9c29d52576fc074" in kata[3].text


def test_short_monotonic_is_put_on_the_wall_clock_by_its_own_time_fields() -> None:
    """The lab's `journalctl -o short-monotonic`: the lines' time= give the boot time, and the
    pairs become clock anchors (for udevadm of the same boot)."""
    events, parsed, _ = _journalctl(
        INC / "go32-port-not-set-stranded" / "journalctl-kata-short-monotonic.txt")
    assert parsed.clock == "realtime" and len(parsed.anchors) == 4
    assert all(abs((a.realtime_ns - a.monotonic_ns) - 1796279314556545000) < 1000
               for a in parsed.anchors)  # the lab guest's boot time (actions.log)
    writes = [e for e in events if isinstance(e, ev.SysfsWriteObserved)]
    assert [w.control for w in writes] == ["unbind", "new_id", "bind"]
    assert all(w.mode == "kata-log" and w.actor.pid == 195 for w in writes)


def test_localised_month_without_a_year_keeps_the_lines_own_time() -> None:
    """PR #3491 pasted `1月 19 21:18:20 node kata[30731]: time="2022-01-19T21:18:20...+08:00"`."""
    events, _, _ = _journalctl(REAL / "kata-pr3491-qmp-device-not-found" / "journalctl-kata.txt")
    (e,) = [x for x in events if isinstance(x, ev.LogLineMatched)]
    assert e.signature == "qmp-device-not-found" and e.ts_ns == 1642598300083923975


def test_describe_rows_compact_and_aligned_are_read_oldest_first() -> None:
    """kubectl describe: aligned rows (kubevirt #6718) and the compact one-line form
    (runtime#2774) give their failures; rows are ordered by age, time unknown."""
    st = FileStats("x")
    events = list(parse_describe(_lines(REAL / "kubevirt-6718-group-not-viable"
                                        / "kubectl-describe-vmi.txt"), st))
    assert [e.signature for e in events if isinstance(e, ev.LogLineMatched)][:1] == [
        "vfio-group-not-viable"]
    compact = list(parse_describe(_lines(REAL / "kata-2774-vfio-operation-not-permitted"
                                         / "kubectl-describe-event.txt"), FileStats("y")))
    assert {e.signature for e in compact if isinstance(e, ev.LogLineMatched)} == {
        "vfio-open-failed", "qemu-launch-failed"}


def test_klog_continuation_lines_join_their_message() -> None:
    """runtime #388: kubelet's E-lines carry QEMU's second line on the next, un-prefixed line."""
    st = FileStats("x")
    parsed = Parsed(events=(), clock="none")
    list(parse_klog(_lines(REAL / "runtime-388-crio-kubelet-klog" / "kubelet.log"), st, parsed))
    assert st.lines == 7 and parsed.clock == "none" and st.bad_lines == 0


def test_lspci_without_D_behind_its_prompt_names_the_host_driver_module() -> None:
    """kata #4091: `➜ lspci -k | grep Eth -A3`: the prompt is skipped, `04:10.0` is the full
    BDF, `Kernel modules: ixgbevf` names the host driver of a VF on vfio-pci."""
    st = FileStats("x")
    (inv,) = list(parse_lspci(_lines(REAL / "kata-4091-translate-vfio-bound" / "lspci-k.txt"), st))
    assert isinstance(inv, ev.InventoryObserved)
    (d,) = inv.devices
    assert (d.bdf, d.driver, d.modules, d.role) == ("0000:04:10.0", "vfio-pci", ("ixgbevf",), "vf")
    assert st.bad_lines == 0


def test_ps_listing_names_shim_vmm_and_the_vfs_the_vmm_holds() -> None:
    """The lab's `ps aux` of a running sandbox: shim pid, QEMU pid, `host=` VF and its bus."""
    (sb,) = list(parse_ps(_lines(INC / "go40-stuck-unbound" / "ps-aux-before.txt"), FileStats("x")))
    assert isinstance(sb, ev.SandboxStarted)
    assert (sb.shim_pid, sb.vmm_pid, sb.vmm_vfio_devices, sb.vmm_vfio_buses) == (
        197, 198, ("0000:01:10.0",), ("rp0",))
    assert sb.cold_plug_origin == "unknown"


def test_a_collected_directory_gives_the_same_verdicts_as_its_files(tmp_path: Path) -> None:
    """A must-gather-like tree (files in nested folders under other names) is walked and each
    file recognised by its content: the same findings as the flat set."""
    src = INC / "go38-no-port-journal-only"
    tree = tmp_path / "must-gather.local.123" / "quay-io-image" / "host_service_logs"
    (tree / "masters").mkdir(parents=True)
    shutil.copy(src / "journalctl.txt", tree / "masters" / "kata_service.log")
    (tmp_path / "must-gather.local.123" / "etc").mkdir()
    shutil.copy(src / "configuration-qemu.toml", tmp_path / "must-gather.local.123" / "etc" / "x")
    shutil.copy(src / "lspci-nnk-after.txt", tree / "lspci")
    flat = pm.run([str(src / n) for n in ("journalctl.txt", "configuration-qemu.toml",
                                          "lspci-nnk-after.txt")], pm.Options())
    walked = pm.run([str(tmp_path)], pm.Options())
    key = sorted((f.rule, f.severity.label, f.bdf or "") for f in flat.findings)
    assert key == sorted((f.rule, f.severity.label, f.bdf or "") for f in walked.findings)
    assert ("vfio-bind-coldplug-disabled", "critical", "0000:01:10.0") in key


def test_a_pasted_fragment_is_text_signatures_only(tmp_path: Path) -> None:
    """`ctr` output is no known artifact: read as `text`, its failure still found."""
    p = tmp_path / "paste"
    p.write_bytes((REAL / "kata-9509-dragonball-no-resource" / "ctr-error.txt").read_bytes())
    imp, err = sniff(str(p))
    assert imp is not None and imp.name == "text" and err == ""
    st = FileStats(str(p))
    events = list(imp.parse(iter_lines(str(p), st), st, str(p)).events)
    assert [e.signature for e in events if isinstance(e, ev.LogLineMatched)] == [
        "dragonball-vfio-create-failed"]


def test_kubectl_events_yaml_and_json_give_the_failure_at_its_time() -> None:
    """`kubectl get events -o yaml|json` (as kubectl prints Events): the FailedCreatePodSandBox
    message at its lastTimestamp; YAML anchors (a billion-laughs file) are refused, counted."""
    from diag.importers.kubeevents import parse_kube_events

    folder = INC / "kubectl-events-9014"
    for name in ("events.yaml", "events.json"):
        st = FileStats(name)
        (e,) = list(parse_kube_events((folder / name).read_text(), st))
        assert isinstance(e, ev.LogLineMatched) and e.signature == "port-not-set"
        assert e.bdf == "0000:5e:02.1" and e.ts_ns == 1707034265000000000
    bomb = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\nkind: Event\nreason: x\ninvolvedObject: {}\n'
    st = FileStats("bomb")
    assert list(parse_kube_events(bomb, st)) == [] and st.bad_lines == 1


def test_a_finding_about_a_sandbox_crictl_names_carries_its_pod(tmp_path: Path) -> None:
    """Kata #10162's QEMU line names only the sandbox; `crictl pods` (its 13-character id) ties
    it to a pod: the finding carries pod and namespace, says so, and rests on the listing too."""
    line = (REAL / "kata-10162-qemu-bus-no-port" / "kata-qemu-line.log").read_text()
    (tmp_path / "kata.log").write_text(line)
    (tmp_path / "crictl-pods.txt").write_text(
        "POD ID              CREATED             STATE               NAME                "
        "NAMESPACE           ATTEMPT\n"
        "3acfa8826f59d       2 minutes ago       NotReady            sriov-pod           "
        "tenant-a            0\n"
        "ab863e4ae6f33       3 days ago          Ready               kube-proxy-x        "
        "kube-system         6\n")
    rep = pm.run([str(tmp_path / "kata.log"), str(tmp_path / "crictl-pods.txt")], pm.Options())
    (f,) = [f for f in rep.findings if f.rule == "kata-known-error"]
    assert (f.sandbox_id or "").startswith("3acfa8826f59d")
    assert all(g.pod == "sriov-pod" for g in rep.findings if g.sandbox_id)
    assert (f.pod, f.pod_namespace) == ("sriov-pod", "tenant-a")
    assert "the pod: from crictl-pods.txt" in dict(f.labels)["inferred"]
    assert str(tmp_path / "crictl-pods.txt") in rep.finding_inputs[f.finding_id]
    alone = pm.run([str(tmp_path / "kata.log")], pm.Options())
    assert alone.findings and all(g.pod is None for g in alone.findings)


def test_dmesg_T_and_the_journal_give_one_kernel_line_once() -> None:
    """`dmesg -T` (to the second) and the journal (to the microsecond) both hold the kernel's
    `blocked until released` line: one happening, one event, one piece of evidence."""
    folder = INC / "go40-stuck-unbound"
    rep = pm.run([str(folder / "dmesg-T.txt"), str(folder / "journalctl-short-iso-precise.txt")],
                 pm.Options())
    blocked = [e for e in rep.timeline if isinstance(e.event, ev.LogLineMatched)
               and e.event.signature == "vfio-device-request-blocked"]
    assert len(blocked) == 1
    (f,) = [f for f in rep.findings if f.rule == "kata-known-error"
            and dict(f.labels).get("signature") == "vfio-device-request-blocked"]
    assert len([x for x in f.evidence if "blocked until released" in x.text]) == 1
    dmesg = rep.inputs[0]
    assert dmesg.alignment is not None and dmesg.alignment.uncertainty_ns == 1_000_000_000
