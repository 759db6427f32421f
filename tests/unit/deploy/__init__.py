"""Unit tests of what ships beside the code: the deploy files and the host package list."""
