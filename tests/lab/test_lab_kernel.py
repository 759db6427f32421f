"""Real igb/igbvf/vfio-pci moves in the QEMU guest give the kernel events the agent is built on."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

import pytest

from tests.lab import labvm


@pytest.fixture(scope="module")
def capture(boot_scenario: Callable[[str], labvm.Boot]) -> dict[str, bytes]:
    res = boot_scenario("capture")
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(res.payloads["capture.tar"])) as tar:
        names = []
        for m in tar.getmembers():
            names.append(m.name.removeprefix("./"))
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                out[m.name.removeprefix("./")] = f.read()
    out["__names__"] = "\n".join(names).encode()
    return out


def _pci_actions(dump: bytes) -> list[str]:
    acts = []
    hexdata, records = "", []
    for line in dump.decode().splitlines():
        if line.startswith("# t_mono_ns="):
            if hexdata:
                records.append(bytes.fromhex(hexdata))
            hexdata = ""
        elif line and not line.startswith("#"):
            hexdata += line
    if hexdata:
        records.append(bytes.fromhex(hexdata))
    for data in records:
        head, *fields = data.rstrip(b"\0").split(b"\0")
        kv = dict(f.decode().split("=", 1) for f in fields)
        if kv.get("SUBSYSTEM") == "pci" and kv.get("PCI_SLOT_NAME") == "0000:01:10.0":
            acts.append(head.decode().split("@")[0] + (f" {kv['DRIVER']}" if "DRIVER" in kv else ""))
    return acts


def test_vfs_come_up_on_igbvf(capture: dict[str, bytes]) -> None:
    """Enabling 2 VFs with igbvf loaded binds both VFs to igbvf (bind uevents with DRIVER)."""
    assert _pci_actions(capture["uevent/sriov-create.dump"])[-1] == "bind igbvf"


@pytest.mark.parametrize("phase", ["kata38-bind-vfio", "kata30-bind-vfio"])
def test_kata_moves_reach_vfio_pci(capture: dict[str, bytes], phase: str) -> None:
    """Both Kata sequences end with VF 01:10.0 bound to vfio-pci: unbind (no DRIVER), bind."""
    assert _pci_actions(capture[f"uevent/{phase}.dump"]) == ["unbind", "bind vfio-pci"]


@pytest.mark.parametrize("phase", ["kata38-restore", "kata30-restore"])
def test_kata_restores_reach_igbvf(capture: dict[str, bytes], phase: str) -> None:
    """Both Kata restore sequences give VF 01:10.0 back to igbvf."""
    assert _pci_actions(capture[f"uevent/{phase}.dump"]) == ["unbind", "bind igbvf"]


def test_every_write_succeeds_but_the_redundant_bind(capture: dict[str, bytes]) -> None:
    """All writes succeed except the 3.0-3.7 explicit bind, which new_id made redundant (EBUSY)."""
    bad = [line for line in capture["actions.log"].decode().splitlines()[1:]
           if not line.endswith(" ok")]
    assert len(bad) == 1
    assert "/drivers/vfio-pci/bind" in bad[0]
    assert bad[0].endswith("EBUSY")


def test_sysfs_copy_matches_the_moved_state(capture: dict[str, bytes]) -> None:
    """The in-guest sysfs copy saw VF 01:10.0 on vfio-pci with driver_override and a group node."""
    names = capture["__names__"].decode().split()
    top = "sysfs/sriov-lab"
    vf = f"{top}/sys/devices/pci0000:00/0000:00:02.0/0000:01:10.0"  # where devices/<bdf> points
    assert f"{top}/sys/bus/pci/devices/0000:01:10.0" in names
    assert capture[f"{vf}/driver_override"].strip() == b"vfio-pci"
    assert f"{vf}/driver" in names
    assert any(n.startswith(f"{top}/dev/vfio/") and n[-1].isdigit() for n in names)
