"""MkDocs hook: render every ``wsseg`` command's help into ``cli.md`` at build time.

The text comes from typer's own Markdown generator (``python -m typer wsseg.cli utils docs``, the same help
``wsseg <command> --help`` prints), run with the interpreter that runs MkDocs, so the page can never drift from
the installed command line. It replaces the marker line in ``cli.md``; a failure stops the build with typer's
message instead of leaving an empty page.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from typing import Any

MARKER = "<!-- wsseg-cli-reference -->"


@functools.cache
def cli_markdown() -> str:
    """Typer's Markdown for the whole ``wsseg`` app, every heading moved one level down under the page title."""
    result = subprocess.run(
        [sys.executable, "-m", "typer", "wsseg.cli", "utils", "docs", "--name", "wsseg"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rendering the wsseg help for cli.md failed:\n{result.stderr}")
    # Typer's own title becomes a section of the page (which has its title), and the commands nest under it.
    return re.sub(r"^(#+) ", r"#\1 ", result.stdout, flags=re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Insert the generated command reference where ``cli.md`` has the marker line."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_markdown())
