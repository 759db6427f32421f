"""Every section and file the README, docs/ and the --help texts point to exists in the repository."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

from diag import cli
from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OUTSIDE = re.compile(r"kata-facts|host-facts|sriov-lab|anchors\.md|aesthetics\.md|DESIGN\.md|§\s?\d")
"""Documents of the project's authors that are not in the repository: a user cannot follow them."""
SEE = re.compile(r"\b[Ss]ee ([A-Z][\w'-]*(?: [\w'-]+)*?)(?=[).;,:]|$| \(|\s*\n)")
README_REF = re.compile(r"README(?:'s)?(?:\s*[,:]\s*|\s+')(?!\w+\.md)([A-Z](?:[\w' -]*\w)?)")
PATH = re.compile(r"(?<![\w/.-])((?:diag|deploy|tests|probes|docs|screenshots)/[\w./<>*{}$-]*[\w/>*}])"
                  r"|\]\(((?!https?:)[^)#\s]+)")


def headings() -> set[str]:
    """Every Markdown heading of the README and docs/ (text after the #s)."""
    out = set()
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            if line.startswith("#"):
                out.add(line.lstrip("#").strip())
    return out


def _has_heading(name: str, all_headings: set[str]) -> bool:
    return any(h == name or h.startswith(name + " ") or h.startswith(name + ",")
               for h in all_headings)


def help_texts() -> Iterator[tuple[str, str]]:
    """(where, text) for the description and every option's help of every command."""
    top = cli.build_parser()
    for p in [top, *cli.command_parsers(top)]:
        yield p.prog, p.description or ""
        for a in p._actions:
            if a.help:
                yield f"{p.prog} {'/'.join(a.option_strings) or a.dest}", a.help


def source_texts() -> Iterator[tuple[str, str]]:
    """(file, text) of every module of diag and every deploy file: their comments point to
    README sections too."""
    for path in [*sorted((REPO / "diag").rglob("*.py")), *sorted((REPO / "deploy").iterdir()),
                 REPO / "Makefile"]:
        yield str(path.relative_to(REPO)), path.read_text()


def shipped_as() -> set[str]:
    """Paths that exist only inside the wheel (pyproject's force-include targets)."""
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(doc["tool"]["hatch"]["build"]["targets"]["wheel"].get("force-include", {}).values())


def _path_ok(rel: str, base: Path) -> bool:
    rel = rel.rstrip(".,:;")
    if any(c in rel for c in "<>*{}$") or rel in shipped_as():
        return True
    return (REPO / rel).exists() or (base / rel).exists()


def test_no_text_cites_documents_outside_the_repository() -> None:
    """The README, docs/ and the --help texts cite nothing a user cannot open (the authors'
    kata-facts, host-facts, ... notes)."""
    bad = [f"{d.name}:{i}: {line.strip()[:90]}" for d in DOCS
           for i, line in enumerate(d.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    bad += [f"{where}: {text[:90]}" for where, text in help_texts() if OUTSIDE.search(text)]
    assert bad == []


def test_every_section_named_exists() -> None:
    """`see X`, `README 'X'`, `README, X` in the README, docs/, --help texts and diag's own
    docstrings name a heading of the README or docs/."""
    all_headings = headings()
    missing = []
    texts = [(d.name, d.read_text()) for d in DOCS] + list(help_texts()) + list(source_texts())
    for where, text in texts:
        flat = re.sub(r"\s+", " ", text)
        names = SEE.findall(flat) if where.endswith(".md") else []
        names += README_REF.findall(flat)
        for name in names:
            if not _has_heading(name.strip(), all_headings):
                missing.append(f"{where}: {name!r}")
    assert missing == []


def test_every_file_named_exists() -> None:
    """Each repository path in backticks or a Markdown link in the README, docs/ and --help
    texts exists (or is a place inside the wheel)."""
    missing = []
    for doc in DOCS:
        for m in PATH.finditer(doc.read_text()):
            rel = m[1] or m[2]
            if not _path_ok(rel, doc.parent):
                missing.append(f"{doc.name}: {rel}")
    for where, text in help_texts():
        for m in PATH.finditer(text):
            if not _path_ok(m[1] or m[2], REPO):
                missing.append(f"{where}: {m[1] or m[2]}")
    assert missing == []


def test_the_checks_see_what_they_look_for() -> None:
    """The patterns find a dangling section, a missing file and an outside citation."""
    text = "Logs (see No such section). `deploy/nothing.txt` and kata-facts §4.3; README, Nowhere"
    flat = re.sub(r"\s+", " ", text)
    assert SEE.findall(flat) == ["No such section"]
    assert README_REF.findall(flat) == ["Nowhere"]
    assert [m[1] for m in PATH.finditer(text)] == ["deploy/nothing.txt"]
    assert OUTSIDE.search(text)
    assert not _has_heading("No such section", headings())
