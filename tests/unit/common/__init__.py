"""Unit tests of the leaf helpers: safe text, the time parser, the registry."""
