"""The end of the inputs as a moment: an untimed listing compared with where the events leave each device."""

from __future__ import annotations

from pathlib import Path

from diag import postmortem as pm

DEV = "/devices/pci0000:00/0000:00:02.0/0000:01:10.0"
HEAD = "monitor will print the received events for:\nKERNEL - the kernel uevent\n\n"


def _uevent(ts: str, action: str, driver: str | None, seq: int) -> str:
    """One `udevadm monitor --kernel --property` record of the VF (no DRIVER= when None)."""
    return (f"KERNEL[{ts}] {action:<8} {DEV} (pci)\nACTION={action}\nDEVPATH={DEV}\n"
            "SUBSYSTEM=pci\n" + (f"DRIVER={driver}\n" if driver else "")
            + f"PCI_ID=8086:10CA\nPCI_SLOT_NAME=0000:01:10.0\nSEQNUM={seq}\n\n")


def _lspci(driver: str) -> str:
    return ("01:10.0 Ethernet controller [0200]: Intel Corporation 82576 Virtual Function "
            f"[8086:10ca] (rev 01)\n\tKernel driver in use: {driver}\n\tKernel modules: igbvf\n")


def _report(tmp_path: Path, last_bind: str | None, listed: str, *, at: str = "") -> pm.Report:
    """The VF unbound from igbvf then bound (to `last_bind`, or to a driver not recorded), and an
    lspci listing showing it on `listed` (given as PATH@`at` when `at`)."""
    cap = tmp_path / "udevadm.txt"
    cap.write_text(HEAD + _uevent("100.000000", "unbind", None, 1)
                   + _uevent("100.500000", "bind", last_bind, 2))
    lspci = tmp_path / "lspci-after.txt"
    lspci.write_text(_lspci(listed))
    return pm.run([str(cap), f"{lspci}@{at}" if at else str(lspci)], pm.Options())


def test_a_listing_whose_drivers_differ_from_the_end_says_so(tmp_path: Path) -> None:
    """Events leave the VF on vfio-pci, the listing shows igbvf: the report says the listing
    was not taken at the end (the note never appeared while the replay's end state was read
    before it was set)."""
    notes = _report(tmp_path, "vfio-pci", "igbvf").clock_notes
    assert any("drivers differ from the end of the replay" in n
               and "0000:01:10.0 igbvf (replay ends with vfio-pci)" in n for n in notes), notes
    assert not any("agrees with the last events" in n for n in notes)


def test_a_listing_that_agrees_with_the_end_is_taken_after_it(tmp_path: Path) -> None:
    """The listing shows the driver the events end with: it was taken after them (assumed,
    said), and nothing is said to differ."""
    notes = _report(tmp_path, "vfio-pci", "vfio-pci").clock_notes
    assert any("agrees with the last events, so it was taken after them" in n for n in notes)
    assert not any("drivers differ" in n for n in notes)


def test_a_bind_whose_driver_was_not_recorded_agrees_with_any_listed_driver(
        tmp_path: Path) -> None:
    """`udevadm monitor` without --property gives a bind without its driver: the listing's
    igbvf is not a difference, the listing closes the story."""
    notes = _report(tmp_path, None, "igbvf").clock_notes
    assert not any("drivers differ" in n for n in notes), notes
    assert any("agrees with the last events" in n for n in notes)


def test_a_listing_given_its_time_is_not_called_untimed(tmp_path: Path) -> None:
    """PATH@end: the listing's drivers are the state at the end, said so; it is not described
    as a listing with no time, nor compared as one."""
    notes = _report(tmp_path, "vfio-pci", "igbvf", at="end").clock_notes
    assert any("taken at the end of the other inputs (as given)" in n for n in notes)
    assert not any("a listing with no time" in n or "drivers differ" in n for n in notes)


# The line quoted in Kata #10162 (https://github.com/kata-containers/kata-containers/issues/10162),
# as Kata's Go runtime logs it: the bind it implies is placed just before it, in the same input.
BUS_LINE = ('time="2024-08-15T10:22:31.123456789Z" level=error msg="qemu-system-x86_64: -device '
            "vfio-pci,host=0000:3b:02.1,bus=<unknown PCIePortBusPrefix: >0,romfile=: Bus "
            "'<unknown PCIePortBusPrefix: >0' not found\" name=containerd-shim-v2 pid=12345 "
            "sandbox=4a1b2c3d source=virtcontainers subsystem=qmp\n")


def test_the_span_runs_from_the_earliest_to_the_latest_event(tmp_path: Path) -> None:
    """A fact derived from a line is placed before it but comes after it in its input's order:
    the report's span is still earliest -> latest (it was printed as '-0.0 s')."""
    line = tmp_path / "line.txt"
    line.write_text(BUS_LINE)
    report = pm.run([str(line)], pm.Options())
    assert report.first_ns is not None and report.last_ns is not None
    assert report.last_ns >= report.first_ns
    assert {f.rule for f in report.findings} >= {"vfio-bind-coldplug-disabled"}
