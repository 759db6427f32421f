"""The project's Debian package list as deploy/packages.sh reads it, and what dpkg says of it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = REPO / "deploy" / "packages.sh"
BIN_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of deploy/packages.txt."""

    group: str
    name: str
    """The package (or `@step`), without its suite."""
    suite: str
    uses: tuple[str, ...]
    """Commands (names) and files (absolute paths) the project uses from the package."""

    @property
    def is_step(self) -> bool:
        return self.name.startswith("@")


def packages_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs deploy/packages.sh (never installs from here: callers pass list/table/missing)."""
    return subprocess.run([str(PACKAGES), *args], capture_output=True, text=True, check=False,
                          env=None if env is None else {**os.environ, **env}, timeout=60)


def table() -> list[Entry]:
    res = packages_sh("table")
    assert res.returncode == 0, res.stderr
    out = []
    for line in res.stdout.splitlines():
        group, spec, *uses = line.split()
        name, _, suite = spec.partition("/")
        out.append(Entry(group, name, suite, tuple(uses)))
    return out


def _aliases(path: str) -> list[str]:
    """The path and its twin across the merged /usr (dpkg records /bin/ip, the file is at
    /usr/bin/ip as well, and the other way round)."""
    for short in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if path.startswith("/usr" + short):
            return [path, path.removeprefix("/usr")]
        if path.startswith(short):
            return [path, "/usr" + path]
    return [path]


def shipped(package: str) -> set[str]:
    """Every path dpkg says the installed package ships, with its merged-/usr twin."""
    res = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True,
                         check=False, timeout=60)
    return {a for line in res.stdout.splitlines() for a in _aliases(line.strip())}


def lacks(entry: Entry) -> list[str]:
    """What the entry says the package gives that dpkg says it does not ship."""
    files = shipped(entry.name)
    out = []
    for use in entry.uses:
        paths = [use] if use.startswith("/") else [f"{d}/{use}" for d in BIN_DIRS]
        if not files.intersection(paths):
            out.append(use)
    return out


def owner(path: str) -> str | None:
    """The package dpkg says ships path (either merged-/usr spelling), or None."""
    for alias in _aliases(path):
        res = subprocess.run(["dpkg-query", "-S", alias], capture_output=True, text=True,
                             check=False, timeout=60)
        if res.returncode == 0:
            # "pkg[:arch][, pkg2]: /path" (diversions and alternatives say more; take the first)
            return res.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def essential(package: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Essential}", package], capture_output=True,
                         text=True, check=False, timeout=60)
    return res.stdout.strip() == "yes"
