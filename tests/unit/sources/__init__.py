"""Unit tests of the sources' readers and loops on fixture trees (sysfs, /proc, Kata)."""
