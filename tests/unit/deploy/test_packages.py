"""deploy/packages.sh: its installed check against real dpkg states, and the one package list
covering every command deploy/*.sh and the lab's host scripts run."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hostpackages import PACKAGES, REPO, essential, owner, packages_sh, table

LAB = REPO / "tests" / "lab"
# The host side of the lab and the set-up scripts: every command they run must be listed.
PY_SCRIPTS = [LAB / "labbuild.py", LAB / "labvm.py", LAB / "labctl.py",
              LAB / "capture_fixtures.py", LAB / "capture_boot_failures.py"]
SH_SCRIPTS = [REPO / "deploy" / "setup-host.sh", REPO / "deploy" / "packages.sh",
              REPO / "deploy" / "build-image.sh"]

# dpkg's status file as dpkg writes it, one stanza per state the check must tell apart.
STATUS = """\
Package: {name}
Status: {status}
Priority: optional
Section: utils
Maintainer: Debian Test <test@example.org>
Architecture: amd64
Version: 2.13+dfsg-7.1
Description: a package in state {status}

"""
STATES = {
    "installed-pkg": "install ok installed",
    "held-pkg": "hold ok installed",
    "known-not-installed": "unknown ok not-installed",  # what this machine said of cpio
    "config-files-only": "deinstall ok config-files",
    "half-installed-pkg": "install ok half-installed",
    "reinstreq-pkg": "install reinstreq half-installed",
    "unpacked-pkg": "install ok unpacked",
}


@pytest.fixture
def admindir(tmp_path: Path) -> Path:
    """A scratch dpkg database (the real dpkg-query reads it through DPKG_ADMINDIR)."""
    d = tmp_path / "dpkg"
    (d / "updates").mkdir(parents=True)
    (d / "info").mkdir()
    (d / "status").write_text("".join(STATUS.format(name=n, status=s) for n, s in STATES.items()))
    return d


def test_dpkg_query_sees_the_scratch_database(admindir: Path) -> None:
    """The states below are dpkg's own reading of the scratch status file."""
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *STATES], text=True,
                         capture_output=True, env={"DPKG_ADMINDIR": str(admindir), "PATH": "/usr/bin:/bin"})
    assert dict(line.split(" ", 1) for line in res.stdout.splitlines()) == STATES


@pytest.mark.parametrize(("name", "installed"), [
    ("installed-pkg", True),
    ("held-pkg", True),  # held is installed: apt-get install would refuse to touch it
    ("known-not-installed", False),  # ends with "installed": the bug
    ("config-files-only", False),
    ("half-installed-pkg", False),
    ("reinstreq-pkg", False),
    ("unpacked-pkg", False),
    ("never-heard-of", False),  # dpkg-query fails: no such package
])
def test_installed_means_installed_and_configured(admindir: Path, name: str,
                                                  installed: bool) -> None:
    """`packages.sh installed` is true only for '(install|hold) ok installed', as dpkg-query
    reports it from a real (scratch) database."""
    res = packages_sh("installed", name, env={"DPKG_ADMINDIR": str(admindir)})
    assert (res.returncode == 0) is installed, res
    assert res.stdout.strip() == ("" if installed else name)


def test_missing_lists_each_group_package_that_is_not_installed(admindir: Path,
                                                                tmp_path: Path) -> None:
    """`packages.sh missing GROUP` reads the list and names what is not installed, a package
    given with its suite as written; an unknown group is an error naming the groups."""
    lst = tmp_path / "packages.txt"
    lst.write_text("# a comment\nrun installed-pkg  ip   # why\nrun known-not-installed\n"
                   "lab config-files-only/bookworm-backports cpio\nlab held-pkg\n"
                   "run @kernel-headers\n")
    env = {"DPKG_ADMINDIR": str(admindir), "VFIOWATCH_PACKAGES_LIST": str(lst)}
    assert packages_sh("missing", "run", "lab", env=env).stdout.split() == [
        "known-not-installed", "config-files-only/bookworm-backports"]
    bad = packages_sh("missing", "nope", env=env)
    assert bad.returncode != 0 and "no group 'nope'" in bad.stderr and "lab run" in bad.stderr


def test_the_real_machine_answers_through_the_same_check() -> None:
    """On this machine dpkg itself is installed and a made-up name is not."""
    assert packages_sh("installed", "dpkg").returncode == 0
    assert packages_sh("installed", "vfiowatch-no-such-package").stdout.strip() == \
        "vfiowatch-no-such-package"


def test_the_installed_check_is_written_once() -> None:
    """Only deploy/packages.sh asks dpkg whether a package is installed: setup-host.sh and the
    lab build call it (the lab once had its own copy, the one with the bug)."""
    asking = []
    for path in [*REPO.joinpath("deploy").iterdir(), *LAB.rglob("*.py"), REPO / "Makefile"]:
        if path.is_file() and "${Status}" in path.read_text(errors="replace"):
            asking.append(path.relative_to(REPO).as_posix())
    assert asking == ["deploy/packages.sh"]


def test_the_list_has_the_three_groups_and_known_suites() -> None:
    """Groups are run, test, lab and image; the only suite named is the one the lab configures."""
    from tests.lab import labbuild

    entries = table()
    assert {e.group for e in entries} == {"run", "test", "lab", "image"}
    assert {e.suite for e in entries} - {""} == {labbuild.BACKPORTS}
    assert [e.name for e in entries if e.suite] == ["qemu-system-x86"]


# --- every command the scripts run comes from a listed (or Essential) package ---------------

SUBPROCESS_CALLS = {"run", "out", "Popen", "check_output", "check_call"}
# Bash words before a command (dropped to find it) and builtins or compound commands (whose
# words are not commands: the piece is skipped).
BASH_PREFIXES = {"if", "then", "else", "elif", "while", "until", "do", "!", "{", "time", "exec",
                 "command"}
BASH_BUILTINS = {
    "fi", "for", "in", "done", "case", "esac", "function", "}", "[[", "[", "test", "echo",
    "printf", "read", "export", "exit", "return", "local", "set", "shift", "cd", "source", ".",
    "declare", "break", "continue", "mapfile", "readarray", "unset", "true", "false", ":",
    "eval", "trap", "wait", "type",
}


def python_commands(path: Path) -> set[str]:
    """Commands a Python script runs: the first word of list literals given to subprocess-like
    calls or built in a *cmd* variable/function, shutil.which arguments, absolute program
    paths, and the commands inside `sh -c` strings."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())

    def from_list(node: ast.AST) -> None:
        if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant) \
                and isinstance(node.elts[0].value, str):
            found.add(node.elts[0].value)
            words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if words[:1] in (["sh"], ["bash"], ["dash"]) and "-c" in words:
                script = words[words.index("-c") + 1:words.index("-c") + 2]
                found.update(bash_commands(script[0]) if script else set())

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", "")
            if name in SUBPROCESS_CALLS and node.args:
                from_list(node.args[0])
            if name == "which" and node.args and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and "cmd" in t.id for t in node.targets):
            from_list(node.value)
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("cmd"):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return) and sub.value is not None:
                    from_list(sub.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                r"/(usr/)?s?bin/[\w.+-]+|/(usr/)?lib/systemd/[\w.-]+", node.value):
            found.add(node.value)
    return found


def _blank_quotes(code: str) -> str:
    """The code with quoted text blanked to "" (it holds no command), but each command
    substitution inside double quotes kept, on a line of its own."""
    out: list[str] = []
    stack: list[list[object]] = [["code", 0, False]]  # kind, open parens, opened by $(
    i = 0
    while i < len(code):
        kind, parens, sub = stack[-1]
        c = code[i]
        if c == "\\":
            out.append(code[i:i + 2] if kind == "code" else "")
            i += 2
            continue
        if code.startswith("$(", i):
            stack.append(["code", 0, True])
            out.append("\n")
            i += 2
            continue
        if kind == "code":
            if c == "'":
                end = code.find("'", i + 1)
                out.append('""')
                i = len(code) if end < 0 else end + 1
                continue
            if c == '"':
                stack.append(["dq", 0, False])
                out.append('""')
            elif c == "(":
                stack[-1][1] = parens + 1  # type: ignore[operator]
                out.append(c)
            elif c == ")" and not parens and sub:
                stack.pop()
                out.append("\n")
            elif c == ")":
                stack[-1][1] = max(0, parens - 1)  # type: ignore[call-overload]
                out.append(c)
            else:
                out.append(c)
        elif c == '"':
            stack.pop()
        i += 1
    return "".join(out)


def bash_commands(text: str) -> set[str]:
    """Commands a bash script runs: the first word of each simple command (after keywords,
    assignments and redirections), minus builtins and the script's own functions."""
    functions = set(re.findall(r"^\s*([\w-]+)\(\)\s*\{", text, re.M))
    code = "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())
    code = re.sub(r"^\s*[\w-]+\(\)\s*\{", "\n", code, flags=re.M)  # "name() {" opens a body
    found = set()
    for piece in re.split(r"<\(|&&|\|\||[;|&`\n]", _blank_quotes(code)):
        words = piece.split()
        while words and (words[0] in BASH_PREFIXES or re.match(r"[\w\[\]]+\+?=", words[0])
                         or words[0][0] in "<>0123456789"):
            words.pop(0)
        if not words or words[0] in BASH_BUILTINS or words[0] in functions:
            continue
        if re.fullmatch(r"[A-Za-z/_][\w./+-]*", words[0]):
            found.add(words[0])
    return found


def _where(command: str) -> str | None:
    return command if command.startswith("/") else shutil.which(command)


def test_the_extractors_see_the_commands_we_know_are_run() -> None:
    """The two extractors find known commands (so an empty result cannot pass the test below)."""
    lab = set().union(*(python_commands(p) for p in PY_SCRIPTS))
    assert {"cpio", "debootstrap", "mkfs.ext4", "depmod", "dpkg-deb", "apt-get", "gcc",
            "qemu-system-x86_64", "umount", "/usr/bin/busybox"} <= lab, lab
    sh = set().union(*(bash_commands(p.read_text()) for p in SH_SCRIPTS))
    assert {"apt-get", "apt-cache", "dpkg-query", "mount", "uname", "readlink"} <= sh, sh
    assert not sh & {"die", "table", "is_installed", "step", "then", "fi", "in"}, sh
    assert bash_commands("set -o pipefail; find . | cpio -o | gzip -1") == {"find", "cpio", "gzip"}


def test_every_command_the_scripts_run_is_in_the_package_list() -> None:
    """Each command setup-host.sh, packages.sh and the lab's host scripts run is named in
    deploy/packages.txt beside its package, or comes from an Essential package (always
    installed); so a tool assumed present but not listed fails here, on any machine."""
    listed = {use: e for e in table() for use in e.uses}
    listed.update({use.rsplit("/", 1)[-1]: e for e in table() for use in e.uses})
    wanted: dict[str, set[str]] = {}
    for p in PY_SCRIPTS + SH_SCRIPTS:
        cmds = python_commands(p) if p.suffix == ".py" else bash_commands(p.read_text())
        for c in cmds:
            wanted.setdefault(c, set()).add(p.relative_to(REPO).as_posix())
    wrong = []
    for cmd, where in sorted(wanted.items()):
        if cmd in listed or cmd.rsplit("/", 1)[-1] in listed:
            continue
        path = _where(cmd)
        pkg = owner(path) if path else None
        if pkg is None or not essential(pkg):
            wrong.append(f"{', '.join(sorted(where))} run {cmd!r} "
                         f"({'package ' + pkg if pkg else 'not installed here'}): "
                         "add it to deploy/packages.txt beside its package")
    assert not wrong, "\n".join(wrong)


def test_packages_sh_is_the_script_the_lab_and_setup_call() -> None:
    """setup-host.sh and labbuild.py both go through deploy/packages.sh."""
    assert "packages.sh" in (REPO / "deploy" / "setup-host.sh").read_text()
    assert 'PACKAGES = REPO / "deploy" / "packages.sh"' in (LAB / "labbuild.py").read_text()
    assert PACKAGES.stat().st_mode & 0o111
