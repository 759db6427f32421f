"""Puts tests/unit/core on sys.path so its tests import `corelab` (streams from lab recordings)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
