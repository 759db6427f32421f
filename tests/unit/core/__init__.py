"""Unit tests of the pure core: the rules on streams built from lab recordings."""
