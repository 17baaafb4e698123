"""Done means: a synthetic nation ingests end to end through the real channels, and what is
stored reconciles with its ground truth (every well-formed record stored once, every
malformed one a dead letter with the reason the ground truth gives, nothing pending)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from usmis.config import Settings
from usmis.fhir import tables as fhir_tables
from usmis.ingest import quality, sources
from usmis.ingest.model import sha256_hex
from usmis.ingest.reconcile import duplicates, reconcile
from usmis.ingest.service import ingest_nation, read_nation
from usmis.ingest.tables import inbox


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
    # one stored record gone: the reconciliation names its source and type
    r = fhir_tables.resource
    with engine.begin() as conn:
        src, rid = conn.execute(select(r.c.source_id, r.c.id).where(
            r.c.resource_type == "Encounter", r.c.source_id.like("ehr_%")).limit(1)).one()
        conn.execute(update(r).where(r.c.resource_type == "Encounter", r.c.id == rid)
                     .values(deleted=True))
    with engine.connect() as conn:
        result = reconcile(conn, small_nation)
    assert not result["ok"]
    assert any(p.startswith(f"{src}: ") and " Encounter resources stored for " in p
               for p in result["problems"]), result["problems"]


@pytest.mark.slow
def test_loading_a_nation_keeps_what_was_registered_before(
    small_nation: Path, settings: Settings, engine: Engine
) -> None:
    """A source registered before keeps its registration; a disabled one stays disabled
    and nothing of it is sent (re-registering every source turned them back on and reset
    their credentials)."""
    nation = read_nation(small_nation)
    hl7 = next(s for s in nation if s.channel == "mllp")
    off = next(s for s in nation if s.channel not in {"mllp", "fhir"})
    with engine.begin() as conn:
        sources.add_source(conn, source_id=hl7.id, name=hl7.name, kind=hl7.kind,
                           channels=["mllp"], formats=["hl7v2"], mllp_peers=["10.1.2.3"],
                           mllp_secret="s3cret")
        sources.add_source(conn, source_id=off.id, name=off.name, kind=off.kind,
                           channels=["file"], formats=[off.format])
        sources.set_enabled(conn, off.id, False)
    report = ingest_nation(settings, small_nation)
    assert report.disabled == [off.id]
    # the loader's messages came from 127.0.0.1 without the secret: refused, not stored
    assert report.acks.get("AR", 0) > 0
    with engine.connect() as conn:
        kept = sources.get(conn, hl7.id)
        assert (kept.mllp_peers, kept.enabled) == (["10.1.2.3"], True)
        assert kept.mllp_secret_hash == sha256_hex(b"s3cret")
        assert not sources.get(conn, off.id).enabled
        sent = {r.source_id for r in conn.execute(select(inbox.c.source_id).distinct())}
    assert off.id not in sent
    assert hl7.id not in sent
    assert len(sent) > 20  # the other sources were loaded
