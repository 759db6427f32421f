"""Architecture rules that run: import contracts covering every module, and a pure core."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PURE = [REPO / "diag" / "core", REPO / "diag" / "render.py", REPO / "diag" / "events.py",
        REPO / "diag" / "codec.py", REPO / "diag" / "sources" / "kata" / "effective.py",
        REPO / "diag" / "sources" / "kata" / "signatures.py"]
"""The pure surface: the core and what it is made of, and the Kata modules postmortem reuses."""
FORBIDDEN_CALLS = {
    "open", "time.time", "time.monotonic", "time.time_ns", "time.monotonic_ns", "time.sleep",
    "datetime.now", "datetime.utcnow", "os.listdir", "os.stat", "os.readlink",
}
FORBIDDEN_IMPORTS = {"socket", "subprocess", "threading", "time", "os", "select", "asyncio", "pathlib"}


def _pure_files() -> list[Path]:
    out: list[Path] = []
    for p in PURE:
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def test_the_pure_surface_does_no_io_and_reads_no_clock() -> None:
    """No module of the pure surface imports I/O/clock/thread modules or calls open()/now()."""
    problems = []
    for path in _pure_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name in FORBIDDEN_CALLS:
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno} calls {name}()")
                continue
            else:
                continue
            for n in names:
                if n in FORBIDDEN_IMPORTS:
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno} imports {n}")
    assert problems == []


def test_importing_the_core_pulls_in_no_kernel_or_ui_library() -> None:
    """In a fresh interpreter, importing diag.core/events/codec loads no bcc, pyroute2, textual."""
    code = (
        "import sys, diag.core.correlator, diag.render, diag.events, diag.codec\n"
        "bad = [m for m in ('bcc','pyroute2','textual','structlog','prometheus_client') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_linter_contracts_hold() -> None:
    """The layer and purity contracts in pyproject.toml are kept (import-linter)."""
    exe = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run([str(exe)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _layer_modules() -> list[str]:
    """Every module named by the layers contract of pyproject.toml (`a | b` split)."""
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    layers = next(c["layers"] for c in doc["tool"]["importlinter"]["contracts"]
                  if c["type"] == "layers")
    return [m.strip() for layer in layers for m in layer.split("|")]


def _modules() -> list[str]:
    """Every module of the diag package (packages by their name, not `__init__`)."""
    out = []
    for path in sorted((REPO / "diag").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def test_every_module_of_diag_is_in_a_layer() -> None:
    """No module sits outside the layers contract, where import-linter would not see its cycles.

    The package root `diag` is the exception: it holds only `__version__` and imports nothing."""
    layers = _layer_modules()
    outside = [m for m in _modules() if m != "diag"
               and not any(m == layer or m.startswith(layer + ".") for layer in layers)]
    assert outside == []


def test_the_package_root_imports_nothing() -> None:
    """`diag/__init__.py` (the one module outside the layers) imports no other module."""
    tree = ast.parse((REPO / "diag" / "__init__.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
               and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    assert imports == []
