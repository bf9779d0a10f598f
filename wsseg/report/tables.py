r"""Rendering a leaderboard's tables as Markdown, LaTeX (booktabs) and CSV text, byte-stable.

Markdown and LaTeX are written by ``tabulate`` (``pipe`` and ``latex_booktabs``) with number parsing off, so every
cell is printed exactly as the leaderboard formatted it; tabulate's LaTeX format escapes ``& % $ # _ { } ~ ^ \``
(and ``< >``). Text columns are left-aligned, number columns right-aligned.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from tabulate import tabulate


@dataclass(frozen=True)
class Table:
    """One table of a leaderboard.

    Attributes:
        heading: its title (a Markdown heading, a LaTeX comment, an HTML heading).
        header: column titles.
        cells: rows of string cells.
        row_classes: per row, its kind for the HTML report's styling (``weak``, ``full``, ``reference``, ``chance``,
            ``count``).
        text_columns: how many leading columns hold text (left-aligned); the rest hold numbers.
    """

    heading: str
    header: list[str]
    cells: list[list[str]]
    row_classes: list[str] = field(default_factory=list)
    text_columns: int = 3


def _align(table: Table) -> list[str]:
    return ["left"] * table.text_columns + ["right"] * (len(table.header) - table.text_columns)


def _latex_comment(text: str) -> str:
    # Comments run to the end of the line: a line break in record-derived text must not end one.
    return "% " + " ".join(text.split())


def _md(text: str) -> str:
    """A table cell or title for Markdown, displayed as written.

    ``|`` ends a cell, and Markdown renders inline HTML, so ``&``, ``<`` and ``>`` are written as entities; a line
    break would end the row or heading.
    """
    return html.escape(" ".join(text.splitlines()), quote=False).replace("|", "\\|")


def markdown(title: str, tables: Sequence[Table], paragraphs: Sequence[str]) -> str:
    """A Markdown document: the title, each table under its heading, then the paragraphs."""
    parts = [f"## {_md(title)}", ""]
    for t in tables:
        cells = [[_md(c) for c in row] for row in t.cells]
        header = [_md(h) for h in t.header]
        body = tabulate(cells, headers=header, tablefmt="pipe", disable_numparse=True, colalign=_align(t))
        parts += [f"### {_md(t.heading)}", "", body, ""]
    for p in paragraphs:
        parts += [p, ""]
    return "\n".join(parts).rstrip("\n") + "\n"


def latex(title: str, tables: Sequence[Table], paragraphs: Sequence[str]) -> str:
    """LaTeX booktabs tabulars (one per table, each preceded by its heading as a comment); paragraphs as comments."""
    lines = [_latex_comment(title)]
    for t in tables:
        lines += [
            "",
            _latex_comment(t.heading),
            tabulate(t.cells, headers=t.header, tablefmt="latex_booktabs", disable_numparse=True, colalign=_align(t)),
        ]
    if paragraphs:
        lines.append("")
        lines += [_latex_comment(p) for p in paragraphs]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """One CSV table: a header line, then one line per row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(cells)
    return buf.getvalue()
