"""Findings, cases, feedback, re-identification and the report on both database backends."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from usmis.audit.repository import iter_entries
from usmis.config import Settings
from usmis.kit.crypto import keyring_for
from usmis.kit.db import make_engine, transaction
from usmis.kit.errors import Conflict, Forbidden
from usmis.oversight import repository as repo
from usmis.oversight import service
from usmis.oversight.tables import oversight_reidentification

from .factories import ExtractBuilder


@dataclass
class Who:
    subject: str
    role: str


INVESTIGATOR = Who("inv-1", "investigator")
CLINICIAN = Who("doc-1", "clinician")


def small_extract(root: Path) -> Path:
    b = ExtractBuilder()
    b.org("P1", region="ALA")
    b.org("P2", region="AST")
    b.person("ps-dead", died="2025-03-10")
    b.person("ps-man", sex="M")
    b.tariff("CERV", 3000, sex="F")
    b.claim("c1", "ps-dead", "P1", "2025-04-01", "A01", 50_000)
    b.claim("c2", "ps-dead", "P2", "2025-05-01", "A01", 10_000)
    b.claim("c3", "ps-man", "P2", "2025-05-01", "CERV", 3000)
    return b.write(root)


def run(settings: Settings, tmp_path: Path) -> service.RunSummary:
    return service.run_all(settings, extract=small_extract(tmp_path / "extract"), threads=1,
                           memory_limit="500MB")


def test_run_persists_ranked_findings_and_rerun_keeps_ids(settings: Settings,
                                                          tmp_path: Path) -> None:
    summary = run(settings, tmp_path)
    assert summary.findings == 3
    assert summary.amount_at_risk == pytest.approx(63_000)
    per_rule = {r.rule_id: r.findings for r in summary.rules}
    assert per_rule["after_death"] == 2
    assert per_rule["sex_age_incompatible"] == 1
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        first = service.findings(conn)
        assert [f["expected_recovery"] for f in first] == sorted(
            (f["expected_recovery"] for f in first), reverse=True)
        assert first[0]["item_ids"] == ["c1"]
        assert first[0]["region"] == "ALA"
        detail = service.finding(conn, first[0]["id"])
        assert any(e["source_record_id"] == "c1" for e in detail["evidence"])
        providers = service.provider_summary(conn)
        assert providers[0]["provider_id"] == "P1"
        assert set(providers[1]["by_rule"]) == {"after_death", "sex_age_incompatible"}
    again = run(settings, tmp_path)
    assert again.run_id != summary.run_id
    with transaction(engine) as conn:
        assert {f["id"] for f in service.findings(conn)} == {f["id"] for f in first}
    engine.dispose()


def test_case_life_cycle_feeds_back_into_rule_likelihood(settings: Settings,
                                                         tmp_path: Path) -> None:
    run(settings, tmp_path)
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        dead = [f for f in service.findings(conn) if f["rule_id"] == "after_death"]
        before = {f["id"]: f["likelihood"] for f in dead}
        case_id = service.open_case(conn, INVESTIGATOR, [f["id"] for f in dead], "Dead souls")
        service.add_case_note(conn, INVESTIGATOR, case_id, "Requested death certificates.")
        service.change_case_status(conn, INVESTIGATOR, case_id, "investigating")
    with transaction(engine) as conn, pytest.raises(Conflict):
        service.change_case_status(conn, INVESTIGATOR, case_id, "open")
    with transaction(engine) as conn:
        service.change_case_status(conn, INVESTIGATOR, case_id, "cleared",
                                   recovered_amount=0)
        detail = service.case_detail(conn, case_id)
        assert detail["status"] == "cleared"
        assert [n["kind"] for n in detail["notes"]] == ["status", "note", "status", "status"]
        fb = {f["rule_id"]: f for f in service.rule_feedback(conn)}
        assert fb["after_death"]["cleared"] == 2
    with transaction(engine) as conn, pytest.raises(Conflict):
        service.change_case_status(conn, INVESTIGATOR, case_id, "confirmed")
    run(settings, tmp_path)
    with transaction(engine) as conn:
        after = {f["id"]: f["likelihood"] for f in service.findings(conn, rule_id="after_death")}
    assert all(after[k] < before[k] for k in before)
    engine.dispose()


def test_reidentification_is_role_restricted_and_logged(settings: Settings,
                                                       tmp_path: Path) -> None:
    run(settings, tmp_path)
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        repo.save_pseudonyms(conn, [("ps-dead", "mpi-person-1"), ("ps-man", "mpi-person-2")])
        fid = service.findings(conn, rule_id="sex_age_incompatible")[0]["id"]
    with transaction(engine) as conn, pytest.raises(Forbidden):
        service.reidentify(conn, settings, CLINICIAN, fid, "curious")
    with transaction(engine) as conn:
        assert service.reidentify(conn, settings, INVESTIGATOR, fid, "case 7") == "mpi-person-2"
    with transaction(engine) as conn:
        log = repo.reidentifications(conn, keyring_for(settings.resolved_key_file), fid)
        stored = conn.execute(select(oversight_reidentification.c.reason)).scalar_one()
        chain = [e.content for e in iter_entries(conn) if e.content["action"] == "reidentify"]
    assert [(x["actor"], x["reason"]) for x in log] == [("inv-1", "case 7")]
    assert b"case 7" not in stored  # the free-text reason is sealed at rest
    # ... and in the hash-chained system audit log, naming the person key, not the person
    assert len(chain) == 1
    assert chain[0]["subject"] == "inv-1"
    assert "mpi-person-2" in chain[0]["persons"]
    engine.dispose()


def test_report_html_and_csv(settings: Settings, tmp_path: Path) -> None:
    run(settings, tmp_path)
    page = service.write_report(settings, tmp_path / "r.html", "html").read_text()
    assert page.count("<svg") == 3
    assert "Money at risk by region" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")
    rows = list(csv.DictReader(io.StringIO(
        service.write_report(settings, tmp_path / "r.csv", "csv").read_text())))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["item_ids"] == '["c1"]'
