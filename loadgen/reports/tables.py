"""Tiny table renderers: aligned monospaced text for the terminal, and GitHub-flavoured Markdown,
plus the few cell formatters the reports share (``format_ms`` and friends; ``-`` means no data).

``align`` is one letter per column: ``"l"`` left, ``"r"`` right, ``"c"`` centre. Without it the first
column is left-aligned and the rest right-aligned (the usual shape: a label, then numbers). Cells may be
any value; they are shown with ``str()``, and ``None`` as an empty cell. Widths count what a terminal
shows, so wide characters (✅, ❌) take two columns and combining marks none.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import Any

Cell = object
NO_DATA = "-"

_GAP = "  "


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], align: str | None = None) -> str:
    """Aligned columns: a header line, a rule of ``-``, then one line per row (no trailing newline)."""
    head, body, aligns = _prepare(headers, rows, align)
    widths = [max(display_width(c) for c in col) for col in zip(head, *body, strict=True)]
    lines = [_line(head, widths, aligns), _GAP.join("-" * w for w in widths)]
    lines += [_line(row, widths, aligns) for row in body]
    return "\n".join(line.rstrip() for line in lines)


def render_markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Cell]], align: str | None = None
) -> str:
    """A GitHub-flavoured Markdown table, padded so the source reads well too (no trailing newline).

    ``|`` in a cell is escaped and line breaks become spaces, so any text is safe in a cell.
    """
    head, body, aligns = _prepare(headers, rows, align)
    head = [_md_escape(c) for c in head]
    body = [[_md_escape(c) for c in row] for row in body]
    widths = [max(3, *(display_width(c) for c in col)) for col in zip(head, *body, strict=True)]
    rule = [_md_rule(a, w) for a, w in zip(aligns, widths, strict=True)]
    lines = [_md_line(head, widths, aligns), "| " + " | ".join(rule) + " |"]
    lines += [_md_line(row, widths, aligns) for row in body]
    return "\n".join(lines)


def display_width(text: str) -> int:
    """Columns ``text`` takes in a monospaced terminal (wide characters and emoji 2, combining marks 0)."""
    width, last = 0, 0
    for ch in text:
        if ch == "\ufe0f":  # emoji presentation: a narrow symbol before it (⚠️) is drawn wide
            width, last = width + (1 if last == 1 else 0), 2
            continue
        if unicodedata.combining(ch) or ch in "\ufe0e\u200d":
            continue
        last = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        width += last
    return width


def format_ms(v: Any) -> str:
    """A latency in ms with about three significant digits: ``0.123``, ``4.56``, ``78.9``, ``1,234``."""
    if v is None or not math.isfinite(float(v)):
        return NO_DATA
    x = float(v)
    if x < 1:
        return f"{x:.3f}"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def format_count(v: Any) -> str:
    return NO_DATA if v is None else f"{int(v):,}"


def format_rps(v: Any) -> str:
    return NO_DATA if v is None else f"{float(v):,.1f}"


def format_pct(fraction: Any) -> str:
    """A fraction as a percentage that never hides a small non-zero value: ``0.42%``, ``0.0042%``."""
    if fraction is None:
        return NO_DATA
    pct = float(fraction) * 100
    if pct == 0:
        return "0%"
    return f"{pct:.2f}%" if abs(pct) >= 0.01 else f"{pct:.2g}%"


def _prepare(
    headers: Sequence[str], rows: Sequence[Sequence[Cell]], align: str | None
) -> tuple[list[str], list[list[str]], str]:
    n = len(headers)
    if n == 0:
        raise ValueError("a table needs at least one column")
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"row {i} has {len(row)} cells, the table has {n} columns")
    aligns = align if align is not None else "l" + "r" * (n - 1)
    if len(aligns) != n or set(aligns) - set("lrc"):
        raise ValueError(f"align must be {n} letters from 'l', 'r', 'c', got {align!r}")
    head = [str(h) for h in headers]
    body = [["" if c is None else str(c) for c in row] for row in rows]
    return head, body, aligns


def _pad(text: str, width: int, align: str) -> str:
    space = width - display_width(text)
    if align == "r":
        return " " * space + text
    if align == "c":
        return " " * (space // 2) + text + " " * (space - space // 2)
    return text + " " * space


def _line(cells: Sequence[str], widths: Sequence[int], aligns: str) -> str:
    return _GAP.join(_pad(c, w, a) for c, w, a in zip(cells, widths, aligns, strict=True))


def _md_escape(text: str) -> str:
    return " ".join(text.replace("|", "\\|").splitlines())


def _md_rule(align: str, width: int) -> str:
    if align == "r":
        return "-" * (width - 1) + ":"
    if align == "c":
        return ":" + "-" * (width - 2) + ":"
    return "-" * width


def _md_line(cells: Sequence[str], widths: Sequence[int], aligns: str) -> str:
    return "| " + " | ".join(_pad(c, w, a) for c, w, a in zip(cells, widths, aligns, strict=True)) + " |"
