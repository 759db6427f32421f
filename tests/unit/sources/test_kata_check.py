"""`vfiowatch check`'s Kata line on fixture hosts: the file and cold_plug_vfio per handler, or why not."""

from __future__ import annotations

from pathlib import Path

from diag.common.paths import HostPaths
from diag.sources.kata.preflight import kata_check

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "kata"


def test_handler_line() -> None:
    """A handler's line names its file, handler and effective cold_plug_vfio."""
    r = kata_check(HostPaths.at(FIX / "go-physical"))
    assert r.ok and r.detail == ("kata config: /opt/kata/share/defaults/kata-containers/runtimes/qemu/"
                                 "configuration-qemu.toml (handler kata-qemu), cold_plug_vfio = root-port")


def test_dropin_origin_is_named() -> None:
    """When a drop-in set the value, the line says which."""
    r = kata_check(HostPaths.at(FIX / "dropins"))
    assert r.detail.endswith("cold_plug_vfio = root-port (from drop-in:/usr/share/defaults/kata-containers/config.d/10-vfio.toml)")


def test_no_kata_line() -> None:
    """No Kata: the assumed built-in default, and the check passes."""
    r = kata_check(HostPaths.at(FIX / "no-kata"))
    assert (r.ok, r.detail) == (True, "no Kata installed: assuming built-in default cold_plug_vfio = no-port")


def test_broken_config_fails_with_position() -> None:
    """A broken file fails the line with file:line:column and the parser's reason."""
    r = kata_check(HostPaths.at(FIX / "broken-toml"))
    assert not r.ok and r.status == "fail"
    assert "invalid: /etc/kata-containers/configuration.toml:15:28: toml: line 15, column 28" in r.detail
