"""Provides the Kata Containers source package: configuration, sandboxes, processes and log lines.

Modules, bottom-up (the pure ones may be imported by `diag.importers` for postmortem use):

- `signatures`: the catalogue of Kata/QEMU/kernel log signatures (pure).
- `config`: Kata configuration discovery, TOML parse, drop-in merge and Kata's validation (the
  parse/merge/validate functions are pure; `discover()` only reads files under the root).
- `logs`: logfmt and journald-JSON decoders, journal and file followers.
- `sandboxes`: persist.json / state.json / bundle decoders, shim/QEMU/VFIO-holder scans.
- `source`: the `kata` Source (registered in `diag.sources`), a thin polling loop over the above.
"""
