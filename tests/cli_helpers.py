"""Running the `wsseg` command in-process for tests that check what a user sees on bad input."""

from __future__ import annotations

import typer
from click.testing import CliRunner, Result

from wsseg.cli import app

runner = CliRunner()
# Built once: typer rebuilds the click command from the function signatures on every invoke, which took most of
# the time of the bad-input suite's thousand cases.
command = typer.main.get_command(app)


def invoke(args: list[str]) -> Result:
    """Run the CLI; fail the test on any escaped exception (CliRunner would swallow it into exit code 1)."""
    result = runner.invoke(command, args, prog_name="wsseg")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert "Traceback" not in result.output, result.output
    return result
