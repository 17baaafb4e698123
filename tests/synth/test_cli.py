"""`usmis synth` writes a nation and reports it; unknown options are refused."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from usmis.cli import app


def test_usmis_synth_writes_a_nation(tmp_path: Path) -> None:
    out = tmp_path / "n"
    result = CliRunner().invoke(app, ["synth", "--people", "120", "--seed", "3", "--out",
                                      str(out), "--quiet", "--set", "fraud.after_death=0.5",
                                      "--set", "visits_per_year=2"])
    assert result.exit_code == 0, result.output
    assert "120 people, 31 sources" in result.output
    meta = json.loads((out / "nation.json").read_text())
    assert meta["people"] == 120
    assert meta["period_start"] == "2024-01-01"
    summary = json.loads((out / "ground_truth" / "summary.json").read_text())
    assert summary["options"]["fraud"]["after_death"] == 0.5
    assert summary["options"]["visits_per_year"] == 2.0


def test_unknown_options_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "x"), "--set",
                                      "fraud.no_such_scheme=1"])
    assert result.exit_code != 0
    assert not (tmp_path / "x").exists()
