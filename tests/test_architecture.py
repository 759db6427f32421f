"""Architecture rules that run: import contracts, and a pure core with no I/O, clock or threads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PURE = [REPO / "diag" / "core", REPO / "diag" / "render.py", REPO / "diag" / "events.py",
        REPO / "diag" / "codec.py"]
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


def test_core_events_codec_do_no_io_and_read_no_clock() -> None:
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
