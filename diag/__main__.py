"""Provides `python -m diag`, identical to the `vfiowatch` command."""

from diag.cli import main

raise SystemExit(main())
