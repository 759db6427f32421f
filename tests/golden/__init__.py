"""Golden tier: whole outputs compared with committed files."""
