"""Provides the list of built-in rule modules; importing it registers them all."""

from __future__ import annotations
