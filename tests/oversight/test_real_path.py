"""The REAL path, end to end: synthetic nation → ingest through every channel → patient
index links → store extract → rule catalogue → scored against the planted ground truth.

The development path (tests/oversight/test_evaluation.py) measures the rules alone; this
test measures what the deployment sees, where stays arrive from a hospital and from the
fund, dispensations from a pharmacy and from the fund, and some fund claims carry no
usable IIN.  The nation is small (ingest dominates the run time: ~300 people take ~5
minutes on SQLite on 2 cores), so the fraud rates are raised until every scheme is planted
at least once in 120 people.  Two schemes are statistical and a nation this size cannot
carry them: upcoding needs a peer group (>= 3 hospitals with >= 20 case-group stays; not
planted here), and volume_spike measures a month against peers whose own months swing by
+-40 % at this size (only "no false alarm" is asserted for it).  Every scheme, these two
included, is measured on this same real path at 2 000 people by
bench/bench_oversight_realpath.py (docs/oversight.md).  SQLite only: ingest on PostgreSQL
is the same code and would double the longest test of the suite.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from usmis.config import Settings
from usmis.ingest.service import ingest_nation
from usmis.oversight.engine import open_extract
from usmis.oversight.evaluation import evaluate_nation
from usmis.oversight.extract.store import build_store_extract
from usmis.oversight.service import extract_dir
from usmis.synth import generate

PEOPLE = 120
SEED = 1
FRAUD = {
    "after_death": 1.0, "phantom_attachment_dead": 1.0, "phantom_attachment_emigrated": 1.0,
    "phantom_attachment_never_seen": 0.02, "two_places_outpatient": 0.3,
    "two_places_overlap": 0.1, "duplicate_billing_within": 0.01,
    "duplicate_billing_across": 0.02, "sex_age_incompatible": 0.01, "excess_units": 0.05,
    "excess_dose": 0.02, "no_indication": 0.01, "upcoding": 0.0,
}
NOT_PLANTED = {"upcoding"}
PRECISION_ONLY = {"volume_spike"}


@pytest.fixture(scope="module")
def nation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nation") / "nation"
    generate(out, people=PEOPLE, seed=SEED, fraud=FRAUD, emigration_share=0.02)
    return out


def _rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["scheme"]: r for r in result["schemes"]}


@pytest.mark.slow
def test_real_path_finds_what_was_planted(settings: Settings, nation: Path,
                                          tmp_path: Path) -> None:
    if not settings.is_sqlite:
        pytest.skip("real-path evaluation runs on SQLite only (ingest time)")
    ingest_nation(settings, nation)
    manifest = build_store_extract(settings, full=True)
    assert manifest.builder == "store"
    # the observation window ends where the data ends, not on the day of the run
    period_end = json.loads((nation / "nation.json").read_text())["period_end"]
    assert manifest.as_of <= period_end

    result = evaluate_nation(nation, extract=extract_dir(settings), settings=settings)
    rows = _rows(result)
    failures = []
    for scheme, row in sorted(rows.items()):
        if scheme in NOT_PLANTED:
            assert row["planted"] == 0, scheme
            continue
        if scheme in PRECISION_ONLY:
            if row["findings"] and (row["precision"] or 0) < 0.90:
                failures.append(f"{scheme}: precision {row['precision']}")
            continue
        if row["planted"] == 0:
            failures.append(f"{scheme}: not planted in this nation")
            continue
        if row["recall"] is None or row["recall"] < 0.95:
            failures.append(f"{scheme}: recall {row['recall']}")
        if row["precision"] is None or row["precision"] < 0.90:
            failures.append(f"{scheme}: precision {row['precision']}")
        if row["amount_ratio"] is None or abs(row["amount_ratio"] - 1) > 0.02:
            failures.append(f"{scheme}: amount ratio {row['amount_ratio']}")
    assert not failures, failures
    _each_source_record_once(extract_dir(settings))
    _capitation_paid_as_sent(extract_dir(settings), nation)
    _incremental_follows_the_patient_index(settings, tmp_path)


PERSON_TABLES = ("persons", "life_events", "attachments", "encounters", "stays", "diagnoses",
                 "dispensations", "lab_tests", "claims")


def _incremental_follows_the_patient_index(settings: Settings, tmp_path: Path) -> None:
    """Registrar operations on the ingested nation (merges, splits, unlinks), each round
    followed by an incremental extract: the result equals a full extract, row for row and
    column for column (``last_updated`` aside) — fund claims' persons through the records
    they bill included."""
    from usmis.fhir.service import FhirService
    from usmis.kit.crypto import keyring_for
    from usmis.kit.db import make_engine, transaction
    from usmis.mpi.service import merge, person_of, split, unlink

    inc, full = tmp_path / "incremental", tmp_path / "full"
    build_store_extract(settings, out=inc, full=True)
    engine = make_engine(settings.resolved_database_url)
    records = duckdb.connect().execute(
        f"SELECT source_system, source_record_id FROM read_parquet("
        f"'{(inc / 'persons').as_posix()}/*.parquet') ORDER BY ALL").fetchall()
    with transaction(engine) as conn:
        svc = FhirService(conn, keyring_for(settings.resolved_key_file))
        patient = {(system, value): svc.search_ids(
            "Patient", f"identifier=https://usmis.kz/sid/source/{system}/patient|{value}",
            limit=1)[0] for system, value in records}
    for round_ in range(3):
        with transaction(engine) as conn:
            people: dict[str, list[str]] = {}  # person → its patients, by source record
            first: dict[str, str] = {}
            for system, value in records:
                pid = patient[(system, value)]
                person = person_of(conn, pid) or ""
                people.setdefault(person, []).append(pid)
                first.setdefault(person, f"{round_}|{system}|{value}")
            # a deterministic mix of people each round (fund claimants without IIN, who
            # are persons of their own, among them)
            groups = [people[p] for p in sorted(
                people, key=lambda p: hashlib.sha256(first[p].encode()).digest())]
            for a, b in zip(groups[0:20:2], groups[1:20:2], strict=True):
                merge(conn, person_of(conn, a[0]) or "", person_of(conn, b[0]) or "",
                      actor="test", reason="registrar merges")
            for group in [g for g in groups[20:] if len(g) > 2][:8]:
                split(conn, person_of(conn, group[0]) or "", group[:1], actor="test",
                      reason="registrar splits")
            for group in groups[-3:]:
                unlink(conn, group[-1], actor="test", reason="registrar unlinks")
        build_store_extract(settings, out=inc)
    engine.dispose()
    build_store_extract(settings, out=full, full=True)
    for table in PERSON_TABLES:
        sql = f"SELECT * EXCLUDE (last_updated) FROM {table}"
        with open_extract(inc, threads=1, memory_limit="500MB") as con:
            got = set(con.sql(sql).fetchall())
        with open_extract(full, threads=1, memory_limit="500MB") as con:
            want = set(con.sql(sql).fetchall())
        assert got == want, (table, len(got ^ want))


def _capitation_paid_as_sent(root: Path, nation: Path) -> None:
    """The fund's capitation payments (CSV → PaymentReconciliation → payments) arrive
    whole: one row per polyclinic and month, with its count, rate and amount."""
    sources = json.loads((nation / "sources.json").read_text())
    sources = sources if isinstance(sources, list) else sources["sources"]
    (src,) = [s for s in sources if s["id"] == "fund_capitation"]
    files = ", ".join(f"'{(nation / f).as_posix()}'" for f in dict.fromkeys(src["files"]))
    con = duckdb.connect()
    sent = con.execute(
        f"SELECT count(*), sum(amount), sum(attached_count) FROM read_csv([{files}], "
        "header = true, all_varchar = false)").fetchone()
    got = con.execute(
        f"SELECT count(*), sum(amount), sum(attached_count), min(rate), "
        f"count(*) FILTER (WHERE provider_id IS NULL OR period_month IS NULL) "
        f"FROM read_parquet('{(root / 'payments').as_posix()}/*.parquet') "
        "WHERE kind = 'capitation'").fetchone()
    assert sent is not None
    assert got is not None
    assert sent[0] > 0
    assert got[:3] == (sent[0], pytest.approx(sent[1]), sent[2])
    assert got[3:] == (1150.0, 0)


def _each_source_record_once(root: Path) -> None:
    """A stay is sent by the hospital (Encounter) and billed by the fund (Claim); a
    dispensation likewise by the pharmacy and the fund: one row each in the extract."""
    con = duckdb.connect()
    for table in ("stays", "dispensations"):
        total, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT (source_system, source_record_id)) "
            f"FROM read_parquet('{(root / table).as_posix()}/*.parquet')").fetchone() or (0, 0)
        assert total == distinct > 0, table
    # every stay names its case group (the fund's claim fills the hospital's Encounter)
    missing = con.execute(
        f"SELECT count(*) FROM read_parquet('{(root / 'stays').as_posix()}/*.parquet') "
        "WHERE case_group IS NULL").fetchone()
    assert missing == (0,)
