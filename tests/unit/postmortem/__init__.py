"""Unit tests of postmortem: the importers, clock alignment, the engine and its command."""
