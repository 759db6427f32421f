"""The lab harness tells a guest that died from one that ran: real consoles of guests booted
with a broken initrd, kernel or root disk (tests/fixtures/lab-console) give what happened."""

from __future__ import annotations

from pathlib import Path

from tests.lab import labvm

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lab-console"


def console(name: str) -> str:
    return (FIXTURES / f"{name}.console.log").read_text(errors="replace")


def test_the_issues_empty_initrd_is_a_panic_while_unpacking_the_initrd() -> None:
    """Issue 15's console: the kernel could not unpack the 20-byte initrd, then panicked for
    want of a root; said as such, not as a timeout or an empty status."""
    got = labvm.boot_failure(console("initrd-cpio-missing"), "", 0)
    assert got == ("the guest kernel panicked while unpacking the initrd (Initramfs unpacking "
                   "failed: junk at the end of compressed archive; then: VFS: Unable to mount "
                   "root fs on unknown-block(0,0)): the initrd is not a whole gzip'd cpio archive")


def test_a_truncated_initrd_is_a_panic_while_unpacking_it() -> None:
    got = labvm.boot_failure(console("initrd-truncated"), "", 0)
    assert got.startswith("the guest kernel panicked while unpacking the initrd (Initramfs "
                          "unpacking failed: read error;"), got


def test_an_initrd_without_init_is_a_panic_before_the_labs_init() -> None:
    got = labvm.boot_failure(console("initrd-without-init"), "", 0)
    assert got == ("the guest kernel panicked before the lab's init ran: VFS: Unable to mount "
                   "root fs on unknown-block(0,0)")


def test_a_root_without_lab_init_names_what_switch_root_said() -> None:
    """The initrd's switch_root found no /lab/init: its words come with the panic."""
    got = labvm.boot_failure(console("root-without-lab-init"), "", 0)
    assert got == ("the guest kernel panicked before the lab's init ran: Attempted to kill "
                   "init! exitcode=0x00000100 (after: switch_root: can't execute '/lab/init': "
                   "No such file or directory)")


def test_qemu_refusing_the_kernel_gives_qemus_words() -> None:
    """QEMU exited 1 with an empty console: its own output says why."""
    qout = (FIXTURES / "kernel-not-a-kernel.qemu.out").read_text()
    assert labvm.boot_failure("", qout, 1) == ("QEMU exited 1 before the guest printed anything: "
                                               "qemu: linux kernel too old to load a ram disk")


def test_a_good_boot_is_no_failure() -> None:
    """A guest that ran its scenario and powered off: nothing to say (its status tells)."""
    assert labvm.boot_failure(console("smoke-ok"), "", 0) == ""


def test_a_guest_that_stopped_before_the_labs_init_says_so() -> None:
    """QEMU exited by itself, no panic and no lab-init line (here the good console with the
    lab's lines removed)."""
    kernel_only = "".join(line for line in console("smoke-ok").splitlines(keepends=True)
                          if not line.startswith(("lab", "lab-init")))
    assert labvm.boot_failure(kernel_only, "", 0) == (
        "the guest stopped before the lab's init ran (no 'lab-init:' line)")


def test_a_panic_after_the_labs_init_is_a_panic_during_the_scenario() -> None:
    """A panic once lab-init has printed: the lab's first lines of a good boot followed by the
    real panic text of the switch_root case."""
    text = console("smoke-ok").splitlines(keepends=True)[0] + console("root-without-lab-init")
    assert labvm.boot_failure(text, "", 0).startswith(
        "the guest kernel panicked during the scenario: Attempted to kill init!")


def test_explain_shows_the_console_path_and_the_lines_up_to_the_panic(tmp_path: Path) -> None:
    """The report names console.log and shows what came before the panic (switch_root's
    words), not only the backtrace after it."""
    text = console("root-without-lab-init")
    b = labvm.Boot(scenario="smoke", console=text, workdir=tmp_path,
                   failure=labvm.boot_failure(text, "", 0))
    out = b.explain(lines=10)
    assert out.startswith("scenario smoke: the guest kernel panicked before the lab's init ran: "
                          "Attempted to kill init!")
    assert f"see {tmp_path}/console.log, last lines:\n" in out
    assert "switch_root: can't execute '/lab/init'" in out and "Kernel panic" in out
    assert "RIP:" not in out  # the backtrace's end is left to the file
