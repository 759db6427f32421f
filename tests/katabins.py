"""Builds real executables laid out like Kata's shims for the tests: Go (Kata's own build forms) and Rust.

Kata's Go runtime gets its version from `pkg/katautils/config-settings.go`, generated from
`config-settings.go.in` with `var COMMIT = "@COMMIT@"` and `var VERSION = "@VERSION@"` replaced
(src/runtime/Makefile, GENERATED_FILES), and is built with `go build -ldflags "$(KATA_LDFLAGS)"
$(BUILDFLAGS)`: KATA_LDFLAGS is empty or `-w -s` (STRIP=yes), BUILDFLAGS `-buildmode=pie` (3.x;
STATIC=no) or nothing with CGO_ENABLED=0 (4.x STATIC=yes). kata-monitor alone gets
`-ldflags "-X main.GitCommit=<commit>"`. `build_kata_go` builds a module of the same path with
the same generated file and main package, in each of those forms, with Debian's golang-go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

MODULE = "github.com/kata-containers/kata-containers/src/runtime"
CONFIG_SETTINGS = '''// Generated as Kata's src/runtime/Makefile generates it from config-settings.go.in.

package katautils

// name is the name of the runtime
var NAME = "kata-runtime"

// name of the project
const PROJECT = "Kata Containers"

// commit is the git commit the runtime is compiled from.
var COMMIT = "{commit}"

// version is the runtime version.
var VERSION = "{version}"

// Default config file used by stateless systems.
var DEFAULTRUNTIMECONFIGURATION = "{prefix}/share/defaults/kata-containers/configuration.toml"

// Alternate config file that takes precedence over
// defaultRuntimeConfiguration.
var DEFAULTSYSCONFRUNTIMECONFIGURATION = "/etc/kata-containers/configuration.toml"
var defaultHypervisorPath = "{prefix}/bin/qemu-system-x86_64"
var defaultJailerPath = "/usr/bin/jailer"
var defaultImagePath = "{prefix}/share/kata-containers/kata-containers.img"
var defaultKernelPath = "{prefix}/share/kata-containers/vmlinuz.container"
var defaultRootfsType = "ext4"
var systemdUnitName = "kata-containers.target"
'''
SHIM_MAIN = '''package main

import (
	"fmt"
	"os"

	"{module}/pkg/katautils"
)

func main() {{
	if len(os.Args) == 2 && os.Args[1] == "--version" {{
		fmt.Printf("%s containerd shim (Golang): id: %q, version: %s, commit: %v\\n",
			katautils.PROJECT, "io.containerd.kata.v2", katautils.VERSION, katautils.COMMIT)
		return
	}}
	fmt.Println(katautils.NAME, katautils.DEFAULTRUNTIMECONFIGURATION,
		katautils.DEFAULTSYSCONFRUNTIMECONFIGURATION, katautils.Paths())
}}
'''
PATHS_GO = '''package katautils

// Paths keeps the default paths referenced, as the real runtime does.
func Paths() []string {
	return []string{defaultHypervisorPath, defaultJailerPath, defaultImagePath, defaultKernelPath,
		defaultRootfsType, systemdUnitName}
}
'''
MONITOR_MAIN = '''package main

import "fmt"

var GitCommit = "unknown-commit"

func main() { fmt.Println("kata-monitor", GitCommit) }
'''
OTHER_MAIN = '''package main

import "fmt"

var version = "3.8.0"

func main() { fmt.Println("not kata", version) }
'''
RUST_MAIN = '''// Stands for the runtime-rs shim: a Rust executable with Kata's version as a constant.
pub const RUNTIME_VERSION: &str = "3.8.0";
fn main() {
    println!("Kata Containers containerd shim (Rust): id: \\"io.containerd.kata.v2\\", version: {}",
             RUNTIME_VERSION);
}
'''
FORMS = {
    # name: (env, go build arguments) as Kata's Makefile gives them
    "pie": ({"CGO_ENABLED": "1"}, ["-ldflags", "", "-buildmode=pie"]),
    "pie-stripped": ({"CGO_ENABLED": "1"}, ["-ldflags", "-w -s", "-buildmode=pie"]),
    "static": ({"CGO_ENABLED": "0"}, ["-ldflags", ""]),
    "static-stripped": ({"CGO_ENABLED": "0"}, ["-ldflags", "-w -s"]),
    # cgo + PIE through the system linker (gcc): pointers in .data are left to .rela.dyn
    "pie-external": ({"CGO_ENABLED": "1"}, ["-ldflags", "-linkmode=external", "-buildmode=pie"]),
    "pie-external-stripped": ({"CGO_ENABLED": "1"}, ["-ldflags", "-linkmode=external -w -s", "-buildmode=pie"]),
}


def go_missing() -> str:
    """Why Go programs cannot be built here ('' when they can)."""
    if shutil.which("go") is None:
        return "no `go` on PATH: install the test group of deploy/packages.txt (golang-go)"
    return ""


def _go_env(cache: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update({"GOCACHE": str(cache / "gocache"), "GOPATH": str(cache / "gopath"), "GOFLAGS": "-mod=mod",
                "GOPROXY": "off", "GO111MODULE": "on", "GOTOOLCHAIN": "local", "HOME": str(cache)})
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{res.stdout}\n{res.stderr}")


def build_kata_go(work: Path, *, version: str, commit: str, form: str, prefix: str = "/opt/kata",
                  cache: Path | None = None) -> Path:
    """containerd-shim-kata-v2 of Kata's module layout, built in `form` (a key of FORMS)."""
    cache = cache or work / ".cache"
    src = work / f"src-{version}-{form}"
    (src / "pkg" / "katautils").mkdir(parents=True, exist_ok=True)
    (src / "cmd" / "containerd-shim-kata-v2").mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(f"module {MODULE}\n\ngo 1.19\n")
    (src / "pkg" / "katautils" / "config-settings.go").write_text(
        CONFIG_SETTINGS.format(commit=commit, version=version, prefix=prefix))
    (src / "pkg" / "katautils" / "paths.go").write_text(PATHS_GO)
    (src / "cmd" / "containerd-shim-kata-v2" / "main.go").write_text(SHIM_MAIN.format(module=MODULE))
    env_extra, args = FORMS[form]
    out = work / f"containerd-shim-kata-v2-{version}-{form}"
    _run(["go", "build", *args, "-o", str(out), "./cmd/containerd-shim-kata-v2"], src, _go_env(cache, env_extra))
    return out


def build_kata_monitor(work: Path, *, commit: str, cache: Path | None = None) -> Path:
    """kata-monitor's form: `-ldflags "-X main.GitCommit=<commit>"`."""
    cache = cache or work / ".cache"
    src = work / "src-monitor" / "cmd" / "kata-monitor"
    src.mkdir(parents=True, exist_ok=True)
    (work / "src-monitor" / "go.mod").write_text(f"module {MODULE}\n\ngo 1.19\n")
    (src / "main.go").write_text(MONITOR_MAIN)
    out = work / "kata-monitor"
    _run(["go", "build", "-ldflags", f"-X main.GitCommit={commit}", "-o", str(out), "./cmd/kata-monitor"],
         work / "src-monitor", _go_env(cache, {"CGO_ENABLED": "0"}))
    return out


def build_other_go(work: Path, cache: Path | None = None) -> Path:
    """A Go program that is not Kata (another module path)."""
    cache = cache or work / ".cache"
    src = work / "src-other"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text("module example.com/notkata\n\ngo 1.19\n")
    (src / "main.go").write_text(OTHER_MAIN)
    out = work / "notkata"
    _run(["go", "build", "-o", str(out), "."], src, _go_env(cache, {"CGO_ENABLED": "0"}))
    return out


def rustc() -> str | None:
    """Debian's rustc (deploy/packages.txt), else any on PATH."""
    return "/usr/bin/rustc" if Path("/usr/bin/rustc").exists() else shutil.which("rustc")


def build_rust(work: Path) -> Path:
    """A Rust executable (the runtime-rs shim is one): no Go build information."""
    exe = rustc()
    if exe is None:
        raise RuntimeError("no rustc: install the test group of deploy/packages.txt (rustc)")
    src = work / "shim.rs"
    src.write_text(RUST_MAIN)
    out = work / "containerd-shim-kata-v2-rs"
    _run([exe, "-O", "-o", str(out), str(src)], work, dict(os.environ))
    return out
