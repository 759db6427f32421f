"""Provides the list of built-in rule modules; importing it registers them all."""

from __future__ import annotations

from diag.core.rules import (
    actor,  # noqa: F401  vfio-bind-unexpected-actor
    coldplug,  # noqa: F401  vfio-bind-coldplug-disabled
    flapping,  # noqa: F401  driver-flapping
    iommu,  # noqa: F401  iommu-group-not-viable
    kata_config,  # noqa: F401  kata-config-invalid
    kata_errors,  # noqa: F401  kata-known-error
    loss,  # noqa: F401  event-loss
    netdev,  # noqa: F401  vf-netdev-lost
    stranded,  # noqa: F401  vf-stranded-on-vfio
    stuck,  # noqa: F401  vf-stuck-unbound
)
