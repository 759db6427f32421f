"""The manual page and the bash/zsh completions, generated from argparse, read by man, bash and zsh."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diag import cli
from diag.commands.clitree import Node, tree
from tests.conftest import REPO

PAGE = REPO / "docs" / "vfiowatch.1"


def _out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def _nodes() -> list[Node]:
    return tree(cli.build_parser()).walk()


def test_the_committed_page_is_the_generated_one(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/vfiowatch.1 is exactly what `vfiowatch man` prints (`make man` rewrites it)."""
    assert PAGE.read_text() == _out(capsys, "man")


def test_groff_reads_the_page_without_a_warning() -> None:
    """groff's man macros, every warning on, say nothing about the page."""
    res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)], capture_output=True,
                         text=True, timeout=60)
    assert (res.returncode, res.stderr) == (0, "")


def test_man_shows_every_command_and_option() -> None:
    """`man -l` renders a section per command and subcommand, each option with its help."""
    res = subprocess.run(["man", "-l", str(PAGE)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "2000",
                              "MAN_KEEP_FORMATTING": ""})
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "NAME vfiowatch - watch SR-IOV VFs" in text and "EXIT STATUS" in text
    for node in _nodes()[1:]:
        assert f"vfiowatch {' '.join(node.path)} [-h]" in text, node.path
        for o in node.options:
            if o.flags == ("-h", "--help"):
                continue
            for flag in o.flags:
                assert flag in text, (node.path, flag)
            assert " ".join(o.help.split()[:6]) in text, (node.path, o.flags)


def _bash_complete(line: str) -> list[str]:
    """What a real bash offers for `line` (the cursor at its end) with the generated script."""
    script = (
        'source <(python3 -m diag completion bash)\n'
        'read -ra COMP_WORDS <<<"$LINE"; [[ $LINE == *" " ]] && COMP_WORDS+=("")\n'
        'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE=$LINE; COMP_POINT=${#LINE}\n'
        'fn=$(complete -p vfiowatch | sed -n "s/.*-F \\([^ ]*\\) .*/\\1/p")\n'
        '"$fn" vfiowatch "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**os.environ, "LINE": line,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=REPO, env=env)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    return res.stdout.split()


def test_bash_completes_commands_options_and_values() -> None:
    """In bash: `vfiowatch sn<TAB>` -> snapshot; `vfiowatch postmortem --<TAB>` -> every
    postmortem option; choices after --format; the subcommand of record; directories."""
    assert _bash_complete("vfiowatch sn") == ["snapshot"]
    postmortem = next(n for n in _nodes() if n.path == ("postmortem",))
    flags = {f for o in postmortem.options for f in o.flags if f.startswith("--")}
    assert set(_bash_complete("vfiowatch postmortem --")) == flags
    assert _bash_complete("vfiowatch --root / snapshot --format ") == ["table", "json"]
    assert _bash_complete("vfiowatch record ") == ["sysfs"]
    assert _bash_complete("vfiowatch record sysfs --o") == ["--out"]
    assert _bash_complete("vfiowatch snapshot --root dia") == ["diag"]
    assert _bash_complete("vfiowatch completion ") == ["bash", "zsh"]


ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -D; source $SCRIPT'
zpty -w z 'COLUMNS=200; print READY'
out=""; until [[ $out == *READY*READY* ]]; do zpty -r -t z line || sleep 0.1; out+=$line; done
zpty -w -n z "$LINE"$'\t'
sleep 1.5
out=""; while zpty -r -t z line; do out+=$line; done
print -r -- "$out"
zpty -d z
"""


def _zsh_complete(line: str, tmp_path: Path) -> str:
    """What a real interactive zsh shows after `line` and a TAB (its terminal output)."""
    script = tmp_path / "_vfiowatch"
    res = subprocess.run([sys.executable, "-m", "diag", "completion", "zsh"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    script.write_text(res.stdout)
    drive = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVER], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "SCRIPT": str(script), "LINE": line})
    assert drive.returncode == 0, drive.stderr
    return drive.stdout


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh missing (deploy/packages.txt, test)")
def test_zsh_completes_commands_and_options(tmp_path: Path) -> None:
    """In an interactive zsh (zpty): `vfiowatch sn<TAB>` completes to `vfiowatch snapshot`;
    `vfiowatch postmortem --<TAB>` lists each postmortem option with its description."""
    assert "vfiowatch snapshot" in _zsh_complete("vfiowatch sn", tmp_path)
    listing = _zsh_complete("vfiowatch postmortem --", tmp_path)
    postmortem = next(n for n in _nodes() if n.path == ("postmortem",))
    for o in postmortem.options:
        for flag in o.flags:
            if flag.startswith("--"):
                assert flag in listing, flag
    assert "only this PCI device" in listing
