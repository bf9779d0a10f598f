"""The committed leaderboards under results/ regenerate byte for byte from the committed run records."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsseg.report.leaderboard import write_leaderboards

RESULTS = Path(__file__).resolve().parents[2] / "results"
BOARDS = sorted(p.parent for p in RESULTS.glob("*/runs"))


@pytest.mark.parametrize("board", BOARDS, ids=[b.name for b in BOARDS])
def test_committed_tables_regenerate_byte_for_byte(board: Path, tmp_path: Path) -> None:
    # The tables only: the HTML report's SVG plots depend on matplotlib's version and fonts.
    result = write_leaderboards([board / "runs"], tmp_path, ["md", "csv", "tex"])
    assert result.files, f"no tables regenerated from {board / 'runs'}"
    for path in result.files:
        committed = board / path.name
        assert committed.is_file(), f"{committed} is missing; regenerate with `wsseg leaderboard {board}/runs`"
        assert path.read_bytes() == committed.read_bytes(), f"{committed} differs from its regenerated version"
