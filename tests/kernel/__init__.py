"""Kernel tier: real netlink, sysfs and network namespaces, as root."""
