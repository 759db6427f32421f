"""Provides `too_deep`: how deeply a TOML text nests, bounded before anything parses it.

tomllib parses inline tables and arrays by recursion (a few thousand `[` or `{` raise
RecursionError) and our merge and key walks recurse into what a dotted header builds (a
10,000-part `[a.a.a...]` parses, then breaks them). So every TOML text is measured first, by a
linear scan that never recurses: each part of a table header or dotted key, each open array and
each open inline table is one level; strings and comments do not count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TOML_DEPTH = 64
"""Levels a TOML file may nest. Real files nest a few levels (containerd's deepest table,
`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]`, is 6)."""


@dataclass(frozen=True)
class TooDeep:
    """Where a TOML text first nests deeper than the limit."""

    line: int
    limit: int

    @property
    def reason(self) -> str:
        return (f"tables, arrays or dotted keys nest deeper than {self.limit} levels; "
                f"not parsed")

    @property
    def message(self) -> str:
        return f"line {self.line}: {self.reason}"


_SIGNIFICANT = re.compile(r"[\n#\"'\[\]{}.=,]")
"""What the scan stops at; the runs between (names, numbers, spaces) are skipped at once."""


def too_deep(text: str, limit: int = MAX_TOML_DEPTH) -> TooDeep | None:
    """None when no value of `text` nests deeper than `limit` levels, else the first line that
    does. A bound, not a parser: malformed TOML is left for the parser to report."""
    n = len(text)
    i = 0
    line = 1
    base = 0  # levels of the current [table] or [[array of tables]] header
    depth = 0  # levels at the current position
    stack: list[tuple[str, int]] = []  # open '[' / '{' of values, with the depth outside them
    key = True  # in a key (a statement's start, or inside an inline table): '.' adds a level
    start = True  # at a statement's start at the top level: '[' opens a header
    while i < n:
        m = _SIGNIFICANT.search(text, i)
        if m is None:
            break
        if start and not text[i:m.start()].isspace() and m.start() > i:
            start = False  # a key began: a '[' later on this line is a value's
        i = m.start()
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            if not stack:
                depth, key, start = base, True, True
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            i, line = _skip_string(text, i, line)
            start = False
            continue
        if start and c == "[":
            i, line, parts = _header(text, i, line)
            if parts > limit:
                return TooDeep(line, limit)
            base = depth = parts
            start = False
            continue
        start = False
        if c == "." and key:
            depth += 1
        elif c == "=":
            key = False
            depth += 1
        elif c in "[{" and not key:
            stack.append((c, depth))
            depth += 1
            key = c == "{"
        elif c in "]}" and stack:
            depth = stack.pop()[1]
            key = False
        elif c == "," and stack:
            depth = stack[-1][1] + 1
            key = stack[-1][0] == "{"
        if depth > limit:
            return TooDeep(line, limit)
        i += 1
    return None


def _skip_string(text: str, i: int, line: int) -> tuple[int, int]:
    """Past the string opening at i (basic, literal, or either multi-line), counting lines."""
    q = text[i]
    if text.startswith(q * 3, i):
        end = text.find(q * 3, i + 3)
        while q == '"' and end > 0 and _escaped(text, end):
            end = text.find(q * 3, end + 1)
        stop = len(text) if end < 0 else end + 3
        while text.startswith(q, stop) and stop - (end + 3) < 2:  # """a"""" ends with the last
            stop += 1
        return stop, line + text.count("\n", i, stop)
    j = i + 1
    while j < len(text) and text[j] != "\n":
        if text[j] == "\\" and q == '"':
            j += 2
            continue
        if text[j] == q:
            return j + 1, line
        j += 1
    return j, line  # unterminated: the newline ends it, the parser says so


def _escaped(text: str, at: int) -> bool:
    """Whether the quote at `at` is escaped by an odd run of backslashes before it."""
    k = at - 1
    while k >= 0 and text[k] == "\\":
        k -= 1
    return (at - 1 - k) % 2 == 1


def _header(text: str, i: int, line: int) -> tuple[int, int, int]:
    """Past a `[a.b]` or `[[a.b]]` header at i: (end, line, number of parts)."""
    j = i + 1
    parts = 1
    while j < len(text) and text[j] != "\n":
        c = text[j]
        if c in "\"'":
            j, line = _skip_string(text, j, line)
            continue
        if c == ".":
            parts += 1
        elif c == "]":
            return j + 1, line, parts
        j += 1
    return j, line, parts
