"""Provides vfiowatch's version; imports nothing heavy so `--version` stays instant."""

__version__ = "0.1.0"
