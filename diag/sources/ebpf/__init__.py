"""Provides the eBPF attribution source package: who wrote each PCI driver-control file in sysfs.

Modules: `layouts` (ctypes mirrors of probes/vfiowatch.h), `decode` (pure: raw record ->
SysfsWriteObserved), `bcc_facade` (the only importer of bcc), `mode` (what the kernel offers and
the mode that follows), `source` (the `ebpf` Source), `preflight` (the `vfiowatch check` line).
Importing this package never imports bcc.
"""

from __future__ import annotations

from diag.sources.ebpf.source import EbpfSource

__all__ = ["EbpfSource"]
