"""Provides the Textual dashboard: a pure consumer of HostState snapshots (diag.tui.app)."""
