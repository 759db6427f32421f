"""Provides the `uevent` source package: kernel uevents (NETLINK_KOBJECT_UEVENT) -> PCI events.

Modules: `decode` (pure: a raw datagram -> event, and the DeviceTracker that completes unbinds
with their driver), `source` (the `uevent` Source: a reader thread draining the kernel socket,
loss and resync).
"""
