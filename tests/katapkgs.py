"""Real package databases for the tests: a Kata package built and installed by the real dpkg and rpm.

`dpkg_install` builds a .deb with dpkg-deb and installs it with `dpkg --root TREE` (which writes
TREE/var/lib/dpkg/status and info/<pkg>.list as on a host); `rpm_install` builds an .rpm with
rpmbuild and records it with `rpm --root TREE --dbpath /var/lib/rpm --justdb` (the sqlite
database Fedora and RHEL 9 have). The agent reads what they wrote; it never runs either tool.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SHIM = "usr/bin/containerd-shim-kata-v2"
CONFIG = "usr/share/defaults/kata-containers/configuration.toml"


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stdout}\n{res.stderr}")
    return res


def _payload(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if rel.startswith(("usr/bin/", "opt/kata/bin/")):
            p.chmod(0o755)


def dpkg_install(tree: Path, work: Path, *, name: str = "kata-containers", version: str = "3.8.0-1",
                 files: dict[str, bytes], conffiles: tuple[str, ...] = ()) -> Path:
    """Build `name_version` with dpkg-deb and install it into `tree` with the real dpkg."""
    pkg = work / f"deb-{name}-{version}"
    _payload(pkg, files)
    (pkg / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: vfiowatch tests <tests@invalid>\n"
        "Section: admin\nPriority: optional\nDescription: Kata Containers runtime (test package)\n"
        " Built by the vfiowatch tests to give dpkg a real Kata package to record.\n")
    if conffiles:
        (pkg / "DEBIAN" / "conffiles").write_text("".join(f"/{c}\n" for c in conffiles))
    deb = work / f"{name}_{version}_amd64.deb"
    _run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(deb)])
    admin = tree / "var" / "lib" / "dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True, exist_ok=True)
    for f in ("status", "available"):
        (admin / f).touch()
    _run(["dpkg", f"--root={tree}", "--force-not-root", "--force-bad-path", "--log=/dev/null",
          "--no-triggers", "-i", str(deb)])
    return admin / "status"


def rpm_missing() -> str:
    if shutil.which("rpmbuild") is None or shutil.which("rpm") is None:
        return "no rpm/rpmbuild: install the test group of deploy/packages.txt (rpm)"
    return ""


def rpm_install(tree: Path, work: Path, *, name: str = "kata-containers", version: str = "3.8.0",
                release: str = "1.fc41", epoch: int | None = None, files: dict[str, bytes]) -> Path:
    """Build `name-version-release` with rpmbuild and record it in `tree`'s sqlite rpmdb with rpm."""
    top = work / f"rpmbuild-{name}-{version}"
    src = top / "payload"
    _payload(src, files)
    listed = "\n".join("/" + rel for rel in files)
    installs = "\n".join(f"install -D -m 0644 {src}/{rel} %{{buildroot}}/{rel}" for rel in files)
    spec = top / f"{name}.spec"
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: {release}\n" + (f"Epoch: {epoch}\n" if epoch else "")
        + "Summary: Kata Containers runtime (test package)\nLicense: Apache-2.0\nBuildArch: x86_64\n"
        "%description\nBuilt by the vfiowatch tests to give rpm a real Kata package to record.\n"
        f"%install\n{installs}\n%files\n{listed}\n")
    _run(["rpmbuild", "--define", f"_topdir {top}", "--define", "_build_id_links none",
          "--define", "__os_install_post %{nil}", "--define", "debug_package %{nil}", "-bb", str(spec)])
    rpmfile = next((top / "RPMS").rglob("*.rpm"))
    db = tree / "var" / "lib" / "rpm"
    db.mkdir(parents=True, exist_ok=True)
    _run(["rpm", "--root", str(tree), "--dbpath", "/var/lib/rpm", "-i", "--justdb", "--nodeps",
          "--noscripts", "--ignorearch", "--ignoreos", str(rpmfile)])
    return db / "rpmdb.sqlite"
