"""Unit tests of postmortem: importers, alignment, the engine and its command."""
