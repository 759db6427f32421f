"""diag.runtime.settings.load: the TOML file and driverctl overrides become AgentConfig; errors say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from diag.common.errors import ConfigError
from diag.core.thresholds import NS, CoreConfig
from diag.runtime.settings import load

GOOD = """\
# vfiowatch configuration
[core]
stranded_grace = 90
stuck_grace = 15.5
flapping_moves = 6
expected_actors = ["containerd-shim", "my-operator"]
allow_vfio = ["0000:3b:00.0"]
disabled_rules = ["driver-flapping"]
severity_overrides = { "vf-netdev-lost" = "error" }

[sources.uevent]
rcvbuf = 4194304
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "vfiowatch.toml"
    p.write_text(text)
    return p


def test_good_file_sets_thresholds_in_nanoseconds_and_keeps_source_tables(tmp_path: Path) -> None:
    """Durations in seconds become ns; lists, severity overrides and [sources.*] come through."""
    cfg = load(_write(tmp_path, GOOD), root=tmp_path)
    assert cfg.core.stranded_grace_ns == 90 * NS and cfg.core.stuck_grace_ns == int(15.5 * NS)
    assert cfg.core.flapping_moves == 6
    assert cfg.core.expected_actors == ("containerd-shim", "my-operator")
    assert cfg.core.severity_overrides == (("vf-netdev-lost", "error"),)
    assert cfg.sources == {"uevent": {"rcvbuf": 4194304}}


def test_no_file_means_defaults(tmp_path: Path) -> None:
    """Without a file the core gets its defaults."""
    assert load(None, root=tmp_path).core == CoreConfig()


def test_driverctl_overrides_to_vfio_are_read_under_the_root(tmp_path: Path) -> None:
    """/etc/driverctl.d/pci-<bdf> saying vfio-pci declares intent; other drivers do not."""
    d = tmp_path / "etc" / "driverctl.d"
    d.mkdir(parents=True)
    (d / "pci-0000:01:10.0").write_text("vfio-pci\n")
    (d / "pci-0000:01:10.2").write_text("igbvf\n")
    (d / "usb-1-1").write_text("vfio-pci\n")
    assert load(None, root=tmp_path).core.driverctl_overrides == ("0000:01:10.0",)


@pytest.mark.parametrize(("text", "where", "what"), [
    ("[core]\nstranded_grace = -3\n", ":2:", "core.stranded_grace"),
    ("[core]\n\nflapping_moves = \"four\"\n", ":3:", "core.flapping_moves"),
    ("[core]\nexpected_actor = [\"x\"]\n", ":2:", "unknown key core.expected_actor"),
    ("[core]\nseverity_overrides = { \"x\" = \"loud\" }\n", ":2:", "unknown severity 'loud'"),
    ("[core\nx = 1\n", "line 1", "not valid TOML"),
    ("[cores]\nx = 1\n", ":1:", "unknown table or key 'cores'"),
    ("[sources]\nuevent = 3\n", ":2:", "sources.uevent must be a table"),
])
def test_errors_name_file_line_and_key_with_a_fix(tmp_path: Path, text: str, where: str,
                                                  what: str) -> None:
    """Each mistake is reported with the file, its line, the key and a hint."""
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load(p, root=tmp_path)
    msg = exc.value.message
    assert str(p) in msg and where in msg and what in msg
    assert exc.value.hint


def test_unreadable_file_says_so(tmp_path: Path) -> None:
    """A missing file is a ConfigError with a hint, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml", root=tmp_path)
