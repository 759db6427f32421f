"""Provides the postmortem engine: operators' artifacts -> one aligned timeline -> the live Correlator.

Same engine, same answer: the events the importers produce go through the very `Correlator`
the live agent runs, in stamp order, and time advances only from their stamps. Modules, in the
order a postmortem runs them:

- `inputs`: Options, and each input file sniffed, read and parsed by its importer.
- `align`: monotonic and untimed inputs put on the wall clock, saying how sure.
- `dedupe`: the copies of one happening seen by several inputs merged into one.
- `katakernel`: the kernel's unbinds and binds Kata's own lines imply, where no capture speaks.
- `moment`: the end of the inputs as a moment (when listings were taken, what they say).
- `replay`: everything merged by stamp, through a fresh Correlator, into a Report.
- `report`: the Report (bounded timeline, findings and totals, exit status).
- `output`: the Report as text, JSON and Markdown.

`run(paths, options)` is the whole of it; `vfiowatch postmortem` (`diag.commands.postmortem`)
parses the options and prints `output`.
"""

from __future__ import annotations

from diag.postmortem.inputs import Input, Options, open_inputs
from diag.postmortem.replay import replay, run
from diag.postmortem.report import BOOT_RELATIVE_NS, Entry, Filter, FindingBook, Report

__all__ = [
    "BOOT_RELATIVE_NS",
    "Entry",
    "Filter",
    "FindingBook",
    "Input",
    "Options",
    "Report",
    "open_inputs",
    "replay",
    "run",
]
