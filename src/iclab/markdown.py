"""Markdown tables, one way for every report."""

from __future__ import annotations

from collections.abc import Sequence

from .stats import Summary


def cell(value, digits: int = 3, spread: str = "", scale: float = 1) -> str:
    """A number as a table cell: floats to `digits` decimals, None as n/a; a Summary as "mean ± sd" (or ± se
    with spread="se"; with spread="" only the mean), the ± part left out for a single value. Numbers are
    multiplied by `scale` first (100: fractions as percentages)."""
    if value is None:
        return "n/a"
    if isinstance(value, Summary):
        text = f"{scale * value.mean:.{digits}f}"
        if spread and value.n > 1:
            text += f" ± {scale * getattr(value, spread):.{digits}f}"
        return text
    if isinstance(value, float):
        return f"{scale * value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence], align: str = "") -> list[str]:
    """Lines of a Markdown table; cells that are not strings go through `cell`. `align` has one letter per column
    ('l' or 'r'); by default the first column is left-aligned and the rest right-aligned."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else cell(c) for c in row) + " |")
    return lines
