"""Unit tests of the documentation: the README, docs/, the man page and what they point to."""
