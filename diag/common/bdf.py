"""Provides PCI addresses as the kernel names them (`0000:01:10.0`): is_bdf and normalise_bdf."""

from __future__ import annotations

import re

_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def is_bdf(text: str) -> bool:
    """True for a full PCI address with domain, in the kernel's lower case (`0000:01:10.0`)."""
    return bool(_BDF.match(text))


def normalise_bdf(text: str) -> str:
    """`84:01.1` -> `0000:84:01.1`; lower-case hex (how Kata and lspci without -D print them)."""
    text = text.strip().lower()
    return text if text.count(":") == 2 else f"0000:{text}"
