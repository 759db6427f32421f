"""Unit tests of the sinks: journal (rotation, damage), logs (fields, escaping), metrics."""
