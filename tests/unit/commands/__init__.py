"""Unit tests of the command line: help texts, errors, options, the deploy files it ships with."""
