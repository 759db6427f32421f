"""Lab tier: the QEMU SR-IOV lab (real igb/igbvf/vfio-pci drivers)."""
