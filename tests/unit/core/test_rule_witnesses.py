"""Every witness counts (issue 17): moves from an unnamed driver, Kata's own write lines, hints."""

from __future__ import annotations

from diag import events as ev
from tests.unit.core.corelab import VF, kata_config, of_rule, run, start_ns

RULE = "vfio-bind-coldplug-disabled"
T0 = start_ns()
SHIM = ev.Process(pid=3131, comm="containerd-shim", sandbox_id="ab" * 32, kata_runtime="go")


def _kata_write(ts: int, control: str, value: str, path: str) -> ev.SysfsWriteObserved:
    return ev.SysfsWriteObserved(ts_ns=ts, source="kata", actor=SHIM, path=path, control=control,
                                 value=value, bdf=VF, result=0, mode="kata-log")


def test_a_move_from_an_unnamed_driver_is_still_a_move() -> None:
    """A capture that began after the VF got its driver: an unbind naming no driver, then the
    bind to vfio-pci: the finding opens, its driver said not named."""
    _, found = run([kata_config(T0),
                 ev.DeviceUnbound(ts_ns=T0 + 10, source="uevent", bdf=VF),
                 ev.DeviceBound(ts_ns=T0 + 20, source="uevent", bdf=VF, driver="vfio-pci")])
    (f,) = of_rule(found, RULE)
    assert "its host driver (not named in these inputs)" in f.summary
    assert "no input names it" in dict(f.labels)["inferred"]
    # The fix is commands to paste: the unnamed driver is a placeholder there, not a phrase.
    assert f"echo <host driver> > /sys/bus/pci/devices/{VF}/driver_override" in f.remedy


def test_a_first_bind_of_a_new_vf_is_not_a_move() -> None:
    """A VF appearing and binding straight to vfio-pci left no driver: no finding."""
    _, found = run([kata_config(T0),
                 ev.DeviceAdded(ts_ns=T0 + 10, source="uevent", bdf=VF, pf="0000:01:00.0"),
                 ev.DeviceBound(ts_ns=T0 + 20, source="uevent", bdf=VF, driver="vfio-pci")])
    assert of_rule(found, RULE) == []


def test_kata_write_lines_make_the_move_critical_and_name_the_shim() -> None:
    """With no eBPF record, Kata's own lines (mode kata-log) are the writes: the actor is the
    shim, the severity critical, the previous driver named by the restore line seen before."""
    dev = f"/sys/bus/pci/devices/{VF}"
    _, found = run([kata_config(T0),
                 _kata_write(T0 + 1, "driver_override", "vfio-pci", f"{dev}/driver_override"),
                 _kata_write(T0 + 2, "unbind", VF, f"{dev}/driver/unbind"),
                 ev.DeviceUnbound(ts_ns=T0 + 3, source="uevent", bdf=VF),
                 _kata_write(T0 + 4, "drivers_probe", VF, "/sys/bus/pci/drivers_probe"),
                 ev.DeviceBound(ts_ns=T0 + 5, source="uevent", bdf=VF, driver="vfio-pci")])
    (f,) = of_rule(found, RULE)
    assert f.severity == ev.Severity.CRITICAL and f.actor is not None and f.actor.pid == 3131
    assert f.sandbox_id == SHIM.sandbox_id


def test_the_host_driver_comes_from_a_listing_module() -> None:
    """An identity listing naming `Kernel modules: igbvf` names the driver the move left."""
    inv = ev.InventoryObserved(ts_ns=T0, source="lspci", devices=(
        ev.PciDevice(bdf=VF, role="vf", modules=("igbvf",)),))
    _, found = run([inv, kata_config(T0),
                 ev.DeviceUnbound(ts_ns=T0 + 10, source="uevent", bdf=VF),
                 ev.DeviceBound(ts_ns=T0 + 20, source="uevent", bdf=VF, driver="vfio-pci")])
    (f,) = of_rule(found, RULE)
    assert "moved from igbvf" in f.summary
    assert "from lspci (Kernel modules)" in dict(f.labels)["inferred"]
