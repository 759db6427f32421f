"""Unit tests of the dashboard's pure formatting."""
