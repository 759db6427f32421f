"""TOML nesting is bounded before parsing: every deep form is caught at its line, real files pass."""

from __future__ import annotations

import tomllib

import pytest

from diag.common.tomldepth import MAX_TOML_DEPTH, too_deep
from tests.conftest import FIXTURES

N = 10_000
DEEP = {
    "header": "[" + ".".join(["a"] * N) + "]\nx = 1\n",
    "array of tables": "[[" + ".".join(["a"] * N) + "]]\nx = 1\n",
    "dotted key": ".".join(["a"] * N) + " = 1\n",
    "inline tables": "x = " + "{a = " * N + "1" + "}" * N + "\n",
    "arrays": "x = " + "[" * N + "1" + "]" * N + "\n",
    "inline dotted keys": "x = {" + ".".join(["a"] * N) + " = 1}\n",
    "arrays across lines": "x = [\n" + "[\n" * N + "1" + "]" * N + "]\n",
}


@pytest.mark.parametrize("form", sorted(DEEP))
def test_every_deep_form_is_caught_at_its_line(form: str) -> None:
    """Each form that makes tomllib (or a later walk) recurse 10,000 deep is refused, with the
    line where it went past the limit."""
    text = "# a comment\n[ok]\nk = 1\n" + DEEP[form]
    got = too_deep(text)
    assert got is not None and got.limit == MAX_TOML_DEPTH
    # [ok] and x are two levels, then one bracket a line from line 4 on: level 65 on line 66
    assert got.line == (2 + MAX_TOML_DEPTH if form == "arrays across lines" else 4), got
    assert f"line {got.line}: " in got.message and "deeper than 64 levels" in got.message


def test_the_forms_really_break_the_parser_or_a_walk() -> None:
    """Why the bound exists: tomllib raises RecursionError on deep values, and a deep header
    parses into a dict no recursive walk survives."""
    for form in ("inline tables", "arrays"):
        with pytest.raises(RecursionError):
            tomllib.loads(DEEP[form])
    d = tomllib.loads(DEEP["header"])
    with pytest.raises(RecursionError):
        repr(d)


def test_the_limit_itself_passes_and_one_more_does_not() -> None:
    """64 levels of arrays pass; 65 do not (the key is one level: 63 brackets then 64)."""
    ok = "x = " + "[" * (MAX_TOML_DEPTH - 1) + "]" * (MAX_TOML_DEPTH - 1) + "\n"
    assert too_deep(ok) is None and tomllib.loads(ok)
    assert too_deep("x = " + "[" * MAX_TOML_DEPTH + "]" * MAX_TOML_DEPTH + "\n") is not None


def test_brackets_in_strings_and_comments_do_not_count() -> None:
    """Quoted brackets, dots and braces (all four string kinds, escapes, quoted keys and header
    parts) and comments are not nesting."""
    many = "[" * 500 + "{" * 500 + "." * 500
    text = (f'# {many}\n[a."{many}".b]\n'
            f'k1 = "{many}\\"{many}"\n'
            f"k2 = '{many}'\n"
            f'k3 = """\n{many}\n\\"""{many}\n"""\n'
            f"k4 = '''\n{many}\n'''\n"
            f'"{many}" = [1.5, "{many}", {{ x = "{many}" }}]  # {many}\n'
            f"t = 1979-05-27T07:32:00.999999Z\n")
    assert tomllib.loads(text)
    assert too_deep(text) is None


def test_every_toml_fixture_is_well_inside_the_limit() -> None:
    """The real configurations (Kata's, containerd's with its deepest plugin tables) pass, even
    at a limit of 8."""
    files = sorted(FIXTURES.rglob("*.toml"))
    assert len(files) > 10
    for f in files:
        assert too_deep(f.read_text(errors="replace"), limit=8) is None, f


def test_a_megabyte_of_config_is_scanned_in_one_pass() -> None:
    """Linear, no recursion: 20,000 tables of keys and arrays scan without error."""
    text = "".join(f'[t{i}.x]\nk = [1, 2, {{a = "s"}}]\n' for i in range(20_000))
    assert too_deep(text) is None
