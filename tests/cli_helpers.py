"""Running the `wsseg` command in-process for tests that check what a user sees on bad input."""

from __future__ import annotations

from click.testing import Result
from typer.testing import CliRunner

from wsseg.cli import app

runner = CliRunner()


def invoke(args: list[str]) -> Result:
    """Run the CLI; fail the test on any escaped exception (CliRunner would swallow it into exit code 1)."""
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert "Traceback" not in result.output, result.output
    return result
