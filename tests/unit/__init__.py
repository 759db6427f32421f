"""Unit tier: pure tests, no privileges."""
