"""Unit tests of the command line: help texts, errors, options."""
