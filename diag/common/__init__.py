"""Provides the leaf helpers every layer may use: paths under --root, errors, safe text, time.

Nothing here imports another part of `diag`: `common` is the bottom layer of the import
contract (pyproject.toml), so any module can lean on it without a cycle.
"""
