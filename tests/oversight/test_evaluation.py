"""`usmis oversight ...` end to end on a small synthetic nation with planted fraud."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from usmis.cli import app
from usmis.config import Settings
from usmis.oversight.evaluation import score
from usmis.synth.generator import generate


@pytest.fixture(scope="module")
def nation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nation") / "n"
    generate(out, 3000, 11)
    return out


def test_scoring_counts_instances_findings_and_amounts() -> None:
    instances = {
        "F1": {"scheme": "after_death", "amount": 100.0, "items": {"s|c1", "s|c2"}},
        "F2": {"scheme": "after_death", "amount": 50.0, "items": {"s|c3"}},
    }
    findings = {"after_death": [
        {"item_ids": ["s|c1"], "amount_at_risk": 100.0},
        {"item_ids": ["s|c9"], "amount_at_risk": 10.0},
    ]}
    (row,) = score(instances, findings)["schemes"]
    assert (row["recall"], row["precision"]) == (0.5, 0.5)
    assert row["amount_ratio"] == pytest.approx(110 / 150)
    assert row["passed"] is False


@pytest.fixture(scope="module")
def evaluation(nation: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`usmis oversight evaluate NATION --format json` (needs no database)."""
    env = {"USMIS_DATA_DIR": str(tmp_path_factory.mktemp("eval-data"))}
    res = CliRunner().invoke(app, ["oversight", "evaluate", str(nation), "--format", "json"],
                             env=env)
    assert res.exit_code == 0, res.output
    result: dict[str, Any] = json.loads(res.stdout)
    return result


def test_evaluate_meets_the_targets_for_every_scheme(evaluation: dict[str, Any]) -> None:
    result = evaluation
    assert result["extract_path"].startswith("nation-dev extract")
    rows = {r["scheme"]: r for r in result["schemes"]}
    assert len(rows) == 11
    for r in rows.values():
        assert r["recall"] >= 0.95, r
        assert r["precision"] >= 0.90, r
        assert abs(r["amount_ratio"] - 1) <= 0.02, r
    assert result["passed"]


def test_cli_extract_run_report(nation: Path, settings: Settings) -> None:
    runner = CliRunner()
    env = {"USMIS_DATA_DIR": str(settings.data_dir),
           "USMIS_DATABASE_URL": settings.resolved_database_url}
    res = runner.invoke(app, ["oversight", "extract", "--nation", str(nation)], env=env)
    assert res.exit_code == 0, res.output
    built = json.loads(res.stdout)
    assert built["builder"] == "nation-dev"
    # the fund's capitation payments: one per polyclinic and month
    assert built["rows"]["payments"] > 0
    res = runner.invoke(app, ["oversight", "run", "--format", "json"], env=env)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["findings"] > 0
    assert len(summary["rules"]) == 11
    html = settings.data_dir / "r.html"
    res = runner.invoke(app, ["oversight", "report", "--format", "html", "--out", str(html)],
                        env=env)
    assert res.exit_code == 0, res.output
    page = html.read_text()
    assert "<svg" in page
    # no direct identifier of the population leaks into the report
    people = (nation / "ground_truth" / "people.csv").read_text(encoding="utf-8").splitlines()
    iins = [line.split(",")[1] for line in people[1:200]]
    assert not any(iin in page for iin in iins)


def test_cli_extract_and_run_on_a_fresh_data_folder(nation: Path, tmp_path: Path) -> None:
    """The first command on a new machine makes the schema (it writes pseudonyms and
    findings), as `usmis ingest` and `usmis serve` do."""
    runner = CliRunner()
    env = {"USMIS_DATA_DIR": str(tmp_path / "fresh"), "USMIS_DATABASE_URL": ""}
    res = runner.invoke(app, ["oversight", "extract", "--nation", str(nation)], env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["oversight", "run", "--format", "json"], env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["findings"] > 0
