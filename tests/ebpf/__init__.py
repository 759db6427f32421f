"""eBPF tier: the real probes on harmless sysfs writes, as root."""
