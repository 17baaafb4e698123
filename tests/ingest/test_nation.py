"""Done means: a synthetic nation ingests end to end through the real channels, and what is
stored reconciles with its ground truth (every well-formed record stored once, every
malformed one a dead letter with the reason the ground truth gives, nothing pending)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from usmis.config import Settings
from usmis.ingest import quality
from usmis.ingest.reconcile import duplicates, reconcile
from usmis.ingest.service import ingest_nation


def make_nation(out: Path, people: int, seed: int, malformed: float = 0.03) -> Path:
    subprocess.run(
        [sys.executable, "-m", "usmis", "synth", "--people", str(people), "--seed", str(seed),
         "--set", f"noise.malformed={malformed}", "--out", str(out), "--quiet"],
        check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def small_nation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 10 % malformed: draws every kind of defect, an unreadable MSH on the MLLP channel too
    return make_nation(tmp_path_factory.mktemp("nation") / "n", people=20, seed=11,
                       malformed=0.1)


@pytest.mark.slow
def test_nation_ingests_end_to_end_and_reconciles(
    small_nation: Path, settings: Settings, engine: Engine
) -> None:
    report = ingest_nation(settings, small_nation)
    assert report.inbox.get("pending", 0) == 0
    assert report.delivered["mllp"] > 0 and report.delivered["rest"] > 0  # noqa: PT018
    assert report.delivered["file"] > 0
    assert set(report.acks) <= {"AA", "AE", "AR"}
    with engine.connect() as conn:
        result = reconcile(conn, small_nation)
        assert result["ok"], result["problems"]
        assert duplicates(conn) == 0
        q = quality.report(conn)
    # the quality report sees the nation's noise: missing IINs somewhere, rejects by reason
    assert sum(d["iin"]["missing"] for d in q.values()) > 0
    assert sum(len(d["rejects"]) for d in q.values()) > 0
    # and ingesting the same nation again changes nothing
    again = ingest_nation(settings, small_nation)
    assert again.resources == report.resources
    with engine.connect() as conn:
        assert reconcile(conn, small_nation)["ok"]
        assert duplicates(conn) == 0
