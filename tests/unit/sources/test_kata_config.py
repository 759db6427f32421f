"""Kata configuration: discovery as Kata does it, drop-in merge order, origins, Kata's validation texts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from diag.common.paths import HostPaths
from diag.sources.kata import discovery, effective

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "kata"
GO_MAIN = "/etc/kata-containers/configuration.toml"


def layer(text: str, path: str = GO_MAIN, kind: str = "file") -> effective.Layer:
    out = effective.parse_layer(text, path, kind)
    assert isinstance(out, effective.Layer), out
    return out


def qemu(body: str) -> str:
    return '[hypervisor.qemu]\nmachine_type = "q35"\n' + body


def origin(cfg, key: str) -> str:
    return next(s.origin for s in cfg.settings if s.key == key)


# ---- pure: parse, merge, validate -----------------------------------------------------------


def test_defaults_when_keys_absent() -> None:
    """Keys the file does not set take Kata's built-in defaults, and say so."""
    cfg, errors = effective.effective_config([layer(qemu(""))], handler="kata")
    assert errors == []
    assert (cfg.cold_plug_vfio, cfg.hot_plug_vfio, cfg.pcie_root_port) == ("no-port", "no-port", 0)
    assert origin(cfg, "cold_plug_vfio") == "default"


def test_empty_cold_plug_means_no_port() -> None:
    """`cold_plug_vfio = ""` is mapped to no-port like Kata's coldPlugVFIO()."""
    cfg, _ = effective.effective_config([layer(qemu('cold_plug_vfio = ""\n'))], handler="kata")
    assert cfg.cold_plug_vfio == "no-port"
    assert origin(cfg, "cold_plug_vfio") == f"file:{GO_MAIN}"


def test_dropins_override_in_order_with_origins() -> None:
    """Later drop-ins override earlier ones and the main file; each value names its file."""
    main = layer(qemu('cold_plug_vfio = "no-port"\npcie_root_port = 0\n'))
    d1 = layer('[hypervisor.qemu]\ncold_plug_vfio = "root-port"\npcie_root_port = 2\n', "/etc/kata-containers/config.d/10.toml", "drop-in")
    d2 = layer("[hypervisor.qemu]\npcie_root_port = 4\n", "/etc/kata-containers/config.d/20.toml", "drop-in")
    cfg, errors = effective.effective_config([main, d1, d2], handler="kata")
    assert errors == []
    assert (cfg.cold_plug_vfio, cfg.pcie_root_port) == ("root-port", 4)
    assert origin(cfg, "cold_plug_vfio") == "drop-in:/etc/kata-containers/config.d/10.toml"
    assert origin(cfg, "pcie_root_port") == "drop-in:/etc/kata-containers/config.d/20.toml"
    assert origin(cfg, "hot_plug_vfio") == "default"
    assert cfg.dropins == ("/etc/kata-containers/config.d/10.toml", "/etc/kata-containers/config.d/20.toml")


def test_both_set_error_keeps_kata_swapped_labels() -> None:
    """Kata prints hot-plug=<cold value> and cold-plug=<hot value>; we reproduce it exactly."""
    text = qemu('cold_plug_vfio = "root-port"\nhot_plug_vfio = "bridge-port"\n')
    _, errors = effective.effective_config([layer(text)], handler="kata")
    assert [e.message for e in errors] == [
        "invalid hot-plug=root-port and cold-plug=bridge-port settings, only one of them can be set"]
    assert errors[0].line == 3 and errors[0].key == "cold_plug_vfio" and errors[0].path == GO_MAIN


def test_invalid_port_value_error_names_line() -> None:
    """An unknown value on q35 gives Kata's `invalid vfio_port=` text at the key's line."""
    _, errors = effective.effective_config([layer(qemu('\n\ncold_plug_vfio = "rootport"\n'))], handler="kata")
    assert errors[0].message == ("invalid vfio_port=rootport setting, allowed values no-port, "
                                 "bridge-port, root-port, switch-port")
    assert errors[0].line == 5


def test_invalid_port_not_checked_off_q35() -> None:
    """Kata skips the value check when the machine type is neither q35 nor virt."""
    text = '[hypervisor.qemu]\nmachine_type = "pc"\ncold_plug_vfio = "rootport"\n'
    cfg, errors = effective.effective_config([layer(text)], handler="kata")
    assert errors == [] and cfg.cold_plug_vfio == "rootport"


def test_clh_accepts_only_no_port_or_root_port() -> None:
    """CLH: `only cold-plug=no-port or root-port supported on CLH` (Kata >= 3.29)."""
    text = '[hypervisor.clh]\ncold_plug_vfio = "bridge-port"\n'
    _, errors = effective.effective_config([layer(text)], handler="kata-clh")
    assert [e.message for e in errors] == ["only cold-plug=no-port or root-port supported on CLH"]


def test_non_qemu_hypervisor_ignores_ports() -> None:
    """firecracker: Kata only warns, so no error."""
    text = '[hypervisor.firecracker]\ncold_plug_vfio = "whatever"\nhot_plug_vfio = "x"\n'
    _, errors = effective.effective_config([layer(text)], handler="kata-fc")
    assert errors == []


def test_port_counts_capped_like_go() -> None:
    """Go caps pcie_root_port at 16 silently; an absurd count is not an error there."""
    cfg, errors = effective.effective_config([layer(qemu("pcie_root_port = 4000\n"))], handler="kata")
    assert errors == [] and cfg.pcie_root_port == 16


@pytest.mark.parametrize(("body", "needle"), [
    ("pcie_root_port = -1\n", "-1 is out of range for uint32"),
    ("pcie_root_port = 99999999999\n", "99999999999 is out of range for uint32"),
    ("cold_plug_vfio = 42\n", "TOML value has type int64; destination has type config.PCIePort"),
    ('pcie_switch_port = "four"\n', "TOML value has type string; destination has type uint32"),
    ('enable_annotations = "cold_plug_vfio"\n', "destination has type []string"),
    ("cold_plug_vfio = { port = 1 }\n", "TOML value has type table; destination has type config.PCIePort"),
])
def test_absurd_values_are_decode_errors_with_line(body: str, needle: str) -> None:
    """Wrong types and out-of-range numbers fail like Kata's TOML decoder, at the key's line."""
    _, errors = effective.effective_config([layer(qemu(body))], handler="kata")
    assert len(errors) == 1 and needle in errors[0].message
    assert errors[0].line == 3 and errors[0].message.startswith("toml: line 3 (last key")


def test_vfio_mode_error_texts() -> None:
    """Go: `Unknown VFIO mode <x>`; runtime-rs: ``Invalid vfio_mode `<x>` in configuration file``."""
    text = qemu("") + '[runtime]\nvfio_mode = "passthrough"\n'
    _, go = effective.effective_config([layer(text)], handler="kata")
    _, rs = effective.effective_config([layer(text)], handler="kata-rs", runtime="rs")
    assert go[0].message == "Unknown VFIO mode passthrough" and go[0].line == 4
    assert rs[0].message == "Invalid vfio_mode `passthrough` in configuration file"


def test_runtime_rs_root_and_switch_ports_forbidden() -> None:
    """runtime-rs refuses pcie_root_port and pcie_switch_port together; it has no hot_plug_vfio."""
    text = qemu('pcie_root_port = 2\npcie_switch_port = 2\nhot_plug_vfio = "root-port"\n')
    cfg, errors = effective.effective_config([layer(text)], handler="kata-rs", runtime="rs")
    assert [e.message for e in errors] == ["Root Port and Switch Port set at the same time is forbidden."]
    assert cfg.hot_plug_vfio == "no-port"


def test_toml_syntax_error_names_line_and_column() -> None:
    """A TOML syntax error is reported with tomllib's line and column."""
    err = effective.parse_layer('[hypervisor.qemu]\ncold_plug_vfio = "root-port\n', GO_MAIN)
    assert isinstance(err, effective.ConfigError)
    assert (err.path, err.line, err.column) == (GO_MAIN, 2, 28)


def test_dropin_syntax_error_uses_kata_wording() -> None:
    """Drop-in decode errors read `error decoding file "<path>": ...` as in Kata."""
    err = effective.parse_layer("[x\n", "/etc/kata-containers/config.d/1.toml", "drop-in")
    assert isinstance(err, effective.ConfigError)
    assert err.message.startswith('error decoding file "/etc/kata-containers/config.d/1.toml": ')


def test_find_key_line_respects_tables() -> None:
    """The key's line is found in the right table, not a same-named key elsewhere."""
    text = '[runtime]\ncold_plug_vfio = "x"\n[hypervisor.qemu]\n# c\n  cold_plug_vfio = "y"\n'
    assert effective.find_key_line(text, ("hypervisor", "qemu"), "cold_plug_vfio") == 5


def test_go_quote() -> None:
    """Go's %q escaping for quoted paths in Kata's messages."""
    assert effective.go_quote('/a "b"\n') == '"/a \\"b\\"\\n"'


# ---- annotations ---------------------------------------------------------------------------------


def cfg_with(enable: list[str], runtime: str = "go", cold: str = "no-port"):
    text = qemu(f'cold_plug_vfio = "{cold}"\nenable_annotations = {enable!r}\n'.replace("'", '"'))
    cfg, errors = effective.effective_config([layer(text)], handler="kata", runtime=runtime)
    assert errors == []
    return cfg


def test_enabled_annotation_overrides_cold_plug() -> None:
    """An enabled cold_plug_vfio annotation wins and forces hot_plug_vfio to no-port."""
    s = effective.apply_annotations(cfg_with(["cold_plug_vfio"]), {effective.ANN_COLD: "root-port"})
    assert (s.cold_plug_vfio, s.errors, s.refused) == ("root-port", (), False)
    assert s.settings[0].origin == f"annotation:{effective.ANN_COLD}"


def test_enable_annotations_is_an_unanchored_regex() -> None:
    """Kata's regexp.MatchString is unanchored: `plug` enables cold_plug_vfio."""
    assert effective.annotation_enabled(["plug"], effective.ANN_COLD)
    assert effective.annotation_enabled([".*"], effective.ANN_COLD)
    assert not effective.annotation_enabled(["^plug"], effective.ANN_COLD)
    assert not effective.annotation_enabled(["[unclosed"], effective.ANN_COLD)
    assert effective.annotation_enabled([], "io.katacontainers.config.runtime.vfio_mode")


def test_not_enabled_annotation_refuses_sandbox() -> None:
    """Go: a non-enabled hypervisor annotation fails creation with Kata's exact text."""
    s = effective.apply_annotations(cfg_with(["enable_iommu", "kernel_params"], cold="root-port"),
                             {effective.ANN_COLD: "no-port"}, path="/b/config.json", sandbox_id="sb")
    assert s.refused and s.cold_plug_vfio == "root-port"
    assert s.errors[0].message == f"annotation {effective.ANN_COLD} is not enabled"
    assert (s.errors[0].key, s.errors[0].sandbox_id) == (effective.ANN_COLD, "sb")


def test_both_annotations_cold_applied_last() -> None:
    """hot_plug_vfio then cold_plug_vfio: the cold annotation wins and hot becomes no-port."""
    s = effective.apply_annotations(cfg_with([".*"]), {effective.ANN_HOT: "root-port", effective.ANN_COLD: "bridge-port"})
    assert (s.cold_plug_vfio, s.hot_plug_vfio) == ("bridge-port", "no-port")


def test_invalid_annotation_port_and_counts() -> None:
    """Bad values give Kata's own texts; > 16 ports fails when the VM is created."""
    s = effective.apply_annotations(cfg_with([".*"]), {effective.ANN_COLD: "root_port"})
    assert s.errors[0].message == 'Invalid PCIe port "root_port" specified in annotation'
    s = effective.apply_annotations(cfg_with([".*"]), {effective.ANN_ROOT_PORT: "-3"})
    assert s.errors[0].message == f"Error parsing annotation for {effective.ANN_ROOT_PORT}: Please specify positive numeric value"
    s = effective.apply_annotations(cfg_with([".*"]), {effective.ANN_ROOT_PORT: "17"})
    assert s.errors[0].message == "Number of PCIe Root Ports exceeed allowed max of 16"


def test_runtime_rs_ignores_cold_plug_annotation() -> None:
    """runtime-rs has no cold_plug_vfio annotation handler and skips non-enabled ones silently."""
    s = effective.apply_annotations(cfg_with([], runtime="rs"), {effective.ANN_COLD: "root-port"})
    assert (s.cold_plug_vfio, s.errors, s.refused) == ("no-port", (), False)


# ---- containerd handlers and discovery on fixture trees ------------------------------------------


def test_containerd_1x_and_2x_layouts() -> None:
    """Handlers come from `io.containerd.cri.v1.runtime` (2.x), `io.containerd.grpc.v1.cri` and `cri` (1.x)."""
    for plugin in ('"io.containerd.cri.v1.runtime"', '"io.containerd.grpc.v1.cri"', "cri"):
        data = effective.tomllib.loads(
            f'[plugins.{plugin}.containerd.runtimes.kata-qemu]\nruntime_type = "io.containerd.kata-qemu.v2"\n'
            f'[plugins.{plugin}.containerd.runtimes.kata-qemu.options]\nConfigPath = "/c.toml"\n'
            f'[plugins.{plugin}.containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n')
        (h,) = effective.handlers_from_containerd(data)
        assert (h.name, h.config_path, h.shim_binary) == ("kata-qemu", "/c.toml", "containerd-shim-kata-qemu-v2")


@pytest.mark.parametrize(("case", "handler", "path", "cold", "root_ports"), [
    ("go-physical", "kata-qemu", "/opt/kata/share/defaults/kata-containers/runtimes/qemu/configuration-qemu.toml", "root-port", 2),
    ("rs-state", "kata-qemu-runtime-rs", "/opt/kata/share/defaults/kata-containers/runtime-rs/configuration-qemu-runtime-rs.toml", "root-port", 4),
    ("dropins", "kata", "/usr/share/defaults/kata-containers/configuration-qemu.toml", "root-port", 4),
    ("annotation-enabled", "kata", "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml", "no-port", 0),
])
def test_discovery_on_fixture_trees(case: str, handler: str, path: str, cold: str, root_ports: int) -> None:
    """One configuration per handler, the file Kata would pick (symlinks resolved), effective values."""
    d = discovery.discover(HostPaths.at(FIX / case))
    assert d.installed and d.errors == ()
    (cfg,) = d.configs
    assert (cfg.handler, cfg.path, cfg.cold_plug_vfio, cfg.pcie_root_port) == (handler, path, cold, root_ports)


def test_containerd_imports_are_followed() -> None:
    """The kata handler defined in an imported conf.d file is found; the import is watched."""
    d = discovery.discover(HostPaths.at(FIX / "dropins"))
    assert d.containerd.handlers[0].defined_in == "/etc/containerd/conf.d/50-kata.toml"
    assert "/etc/containerd/conf.d" in d.watch and "/usr/share/defaults/kata-containers/config.d" in d.watch


def test_no_kata_assumes_builtin_defaults() -> None:
    """No Kata anywhere: one assumed `default` handler with cold_plug_vfio = no-port."""
    d = discovery.discover(HostPaths.at(FIX / "no-kata"))
    assert not d.installed
    (cfg,) = d.configs
    assert (cfg.handler, cfg.assumed, cfg.cold_plug_vfio, cfg.path) == ("default", True, "no-port", None)


def test_broken_toml_names_file_line_column() -> None:
    """A syntax error in the main file: no configuration, one error at file:15:28."""
    d = discovery.discover(HostPaths.at(FIX / "broken-toml"))
    assert d.configs == ()
    (err,) = d.errors
    assert (err.path, err.line, err.column, err.handler) == (GO_MAIN, 15, 28, "default")


def copy_case(tmp_path: Path, case: str) -> Path:
    dst = tmp_path / case
    shutil.copytree(FIX / case, dst, symlinks=True)
    return dst


def test_kata_conf_file_must_be_shipped(tmp_path: Path) -> None:
    """KATA_CONF_FILE elsewhere than a shipped path fails with Kata's exact text (>= 4.0)."""
    root = copy_case(tmp_path, "dropins")
    (root / "tmp").mkdir()
    (root / "tmp" / "mine.toml").write_text(qemu('cold_plug_vfio = "root-port"\n'))
    d = discovery.discover(HostPaths.at(root), envs={"kata": {"KATA_CONF_FILE": "/tmp/mine.toml"}})
    (err,) = d.errors
    assert err.message == 'invalid KATA_CONF_FILE "/tmp/mine.toml": only shipped Kata configuration files are accepted'
    assert d.configs == ()


def test_kata_conf_file_shipped_path_is_used(tmp_path: Path) -> None:
    """KATA_CONF_FILE naming the shipped file via a symlink resolves and is accepted (Go: after ConfigPath)."""
    root = copy_case(tmp_path, "dropins")
    (root / "etc" / "kata-containers").mkdir(parents=True)
    os.symlink("/usr/share/defaults/kata-containers/configuration-qemu.toml",
               root / "etc" / "kata-containers" / "alias.toml")
    d = discovery.discover(HostPaths.at(root), envs={"kata": {"KATA_CONF_FILE": "/etc/kata-containers/alias.toml"}})
    assert d.errors == () and d.loads[0].how == "KATA_CONF_FILE"


def test_go_prefers_config_path_over_env_rs_the_reverse(tmp_path: Path) -> None:
    """Go: ConfigPath beats KATA_CONF_FILE; runtime-rs reads KATA_CONF_FILE first."""
    root = copy_case(tmp_path, "go-physical")
    env = {"KATA_CONF_FILE": "/somewhere/else.toml"}
    h = discovery.read_containerd(HostPaths.at(root)).handlers[0]
    assert discovery.load_handler(HostPaths.at(root), h, env).how == "ConfigPath"
    rs = effective.RuntimeHandler(name="rs", runtime="rs", config_path=h.config_path)
    load = discovery.load_handler(HostPaths.at(root), rs, env)
    assert load.config is None and "invalid KATA_CONF_FILE" in load.errors[0].message


def test_missing_config_path_file(tmp_path: Path) -> None:
    """A ConfigPath that does not exist: Kata's `Cannot find usable config file`."""
    root = copy_case(tmp_path, "go-physical")
    h = effective.RuntimeHandler(name="x", config_path="/nope.toml")
    load = discovery.load_handler(HostPaths.at(root), h)
    assert load.errors[0].message == "Cannot find usable config file (file /nope.toml does not exist)"


def test_unreadable_dropin_and_fifo_do_not_block(tmp_path: Path) -> None:
    """A FIFO or a directory in config.d is an error naming it, never a hang."""
    root = copy_case(tmp_path, "dropins")
    os.mkfifo(root / "usr/share/defaults/kata-containers/config.d/30-fifo.toml")
    d = discovery.discover(HostPaths.at(root))
    (err,) = d.errors
    assert err.path == "/usr/share/defaults/kata-containers/config.d/30-fifo.toml"
    assert "not a regular file" in err.message


def test_symlink_escaping_root_stays_under_root(tmp_path: Path) -> None:
    """An absolute symlink target is resolved under --root, not on the host."""
    root = copy_case(tmp_path, "dropins")
    link = root / "usr/share/defaults/kata-containers/configuration.toml"
    link.unlink()
    os.symlink("/usr/share/defaults/kata-containers/configuration-qemu.toml", link)
    assert discovery.resolve(HostPaths.at(root), "/usr/share/defaults/kata-containers/configuration.toml") == \
        "/usr/share/defaults/kata-containers/configuration-qemu.toml"
    os.symlink("loop", root / "loop")
    assert discovery.resolve(HostPaths.at(root), "/loop") is None


def test_config_from_texts_for_importers() -> None:
    """Importers get the same effective view and errors from file contents alone."""
    cfg, errors = effective.config_from_texts(GO_MAIN, qemu('cold_plug_vfio = "no-port"\n'),
                                       [("/etc/kata-containers/config.d/1.toml", '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n')])
    assert errors == [] and cfg is not None and cfg.cold_plug_vfio == "root-port"
    cfg, errors = effective.config_from_texts(GO_MAIN, "[broken")
    assert cfg is None and errors[0].line == 1


def test_running_runtime_rs_shim_switches_the_search() -> None:
    """A handler without runtime_path whose running shim is runtime-rs is searched with runtime-rs's paths."""
    d = discovery.discover(HostPaths.at(FIX / "dropins"), runtimes={"kata": "rs"})
    (load,) = d.loads
    assert load.config is None and load.how == "none"
    assert effective.RS_DEFAULT_PATHS[0] in load.errors[0].message
