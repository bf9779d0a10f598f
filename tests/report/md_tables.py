"""Reading the Markdown tables that the leaderboards write, for assertions on whole cells."""

from __future__ import annotations

import html


def md_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row (header and separator lines included), stripped, as a reader sees them.

    The leaderboards escape ``<``, ``>`` and ``&`` as HTML entities (``&lt;5 mm Dice``), which Markdown renders as
    the characters; the cells are returned unescaped, so tests name the columns as the tables show them.
    """
    return [
        [html.unescape(c.strip()) for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def row_of(text: str, method: str, after: str = "") -> list[str]:
    """The cells of the first table row whose method column is ``method`` (in the text after ``after``)."""
    rest = text[text.index(after) :] if after else text
    return next(r for r in md_rows(rest) if len(r) > 1 and r[1] == method)


def header_of(text: str, after: str = "") -> list[str]:
    """The column titles of the first table (after ``after``)."""
    rest = text[text.index(after) :] if after else text
    return md_rows(rest)[0]
