"""Benchmark helper: the plain-text table the benchmarks print (columns padded to fit)."""

from __future__ import annotations


def table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """`title`, then the header, a rule and the rows, each column as wide as its widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
