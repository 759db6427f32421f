"""Provides HostPaths: every host path the agent reads, taken under one injectable root.

Like node_exporter's `--path.rootfs`: with `--root /host` the agent reads `/host/sys`,
`/host/proc`, ... so fixture trees work in tests and a container can watch its host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diag.common.errors import RootError


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Host directories under `root`."""

    root: Path = Path("/")

    @classmethod
    def at(cls, root: str | Path) -> HostPaths:
        return cls(Path(root))

    def host(self, path: str) -> Path:
        """Map an absolute host path (`/run/vc/sbs`) under the root."""
        return self.root / path.lstrip("/")

    @property
    def sys(self) -> Path:
        return self.root / "sys"

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    @property
    def pci_devices(self) -> Path:
        return self.sys / "bus" / "pci" / "devices"

    def require_sysfs(self) -> None:
        """Raise RootError unless the root holds a PCI sysfs."""
        if not self.root.is_dir():
            raise RootError(
                f"{self.root} is not a directory",
                hint="pass --root a directory holding the host's file system (default /)",
            )
        if not self.pci_devices.is_dir():
            raise RootError(
                f"{self.pci_devices} does not exist: {self.root} holds no sysfs",
                hint="mount sysfs there (mount -t sysfs sysfs <root>/sys) or pass the right --root",
            )
