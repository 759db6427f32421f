"""TUI tier: Textual pilot and snapshot tests."""
