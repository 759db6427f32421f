"""Provides the Kata Containers source package: configuration, sandboxes, processes and log lines.

Modules, bottom-up (the pure ones may be imported by `diag.importers` for postmortem use):

- `signatures`: the catalogue of Kata/QEMU/kernel log signatures (pure).
- `effective`: Kata's configuration, pure: TOML parse, drop-in merge, Kata's validation and
  pod annotations (what the postmortem importer runs on copied files).
- `discovery`: which configuration files each runtime handler uses (containerd's runtimes,
  KATA_CONF_FILE, the defaults, config.d), read under the root.
- `loglines`: Kata's log lines: logfmt and journald-JSON decoders, journald and file followers.
- `decode`: persist.json / state.json / bundle / QEMU argv decoders and the assembly of a
  SandboxStarted (pure).
- `sandboxes`: the state directories, bundles, shim/QEMU processes and VFIO holders read
  under the root.
- `source`: the `kata` Source (registered in `diag.sources`), a thin polling loop over the above.
- `preflight`: the `vfiowatch check` line for Kata (each handler's cold_plug_vfio).
"""
