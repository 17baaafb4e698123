"""Evaluation on a synthetic nation (``usmis synth``): its feeds, its ground truth.

The feeds are read with the ingest domain's own pure mappers (HL7 v2, FHIR bundles, the
declarative file mappings), so the matcher sees exactly the Patients the pipeline would
store, without a database: the linking can be tuned before (and apart from) ingestion.
A source whose feed cannot be read here (no file mapping yet, unknown format) is skipped
and named in the report.

Ground truth: ``ground_truth/source_records.csv`` maps each (source, local patient id) to
the true person.  This module is evaluation code: nothing else in USMIS reads it.

Records are keyed ``{source_id}/{local patient id}``; a record seen several times (updates,
late re-sends) keeps its last version.  HL7 A40 merges are kept as source assertions.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection

from usmis.config import Settings
from usmis.kit.logging import get_logger
from usmis.mpi import batch, evaluation
from usmis.mpi.model import (
    SOURCE_PATIENT_PREFIX,
    MatchRecord,
    _text,
    parse_birth,
    record_from_patient,
)

log = get_logger(__name__)

TRUTH_FILE = "ground_truth/source_records.csv"


@dataclass
class Nation:
    records: list[MatchRecord]
    truth: list[str]
    merges: list[tuple[str, str]] = field(default_factory=list)
    read_per_source: dict[str, int] = field(default_factory=dict)
    skipped_sources: dict[str, str] = field(default_factory=dict)
    unlabelled: int = 0
    # Raw (transliterated, lower-cased) fields per record, for the Splink reference run.
    raw: list[dict[str, Any]] = field(default_factory=list)


def _patients_of_bundle(bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for e in bundle.get("entry") or []:
        res = e.get("resource") if isinstance(e, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "Patient":
            yield res


def _local_id(source_id: str, patient: dict[str, Any]) -> str | None:
    prefix = f"{SOURCE_PATIENT_PREFIX}{source_id}/patient"
    for ident in patient.get("identifier") or []:
        if ident.get("system") == prefix and ident.get("value"):
            return str(ident["value"])
    return None


_COLUMN_REF = re.compile(r"\$([^|{}\"'\s,\]]+)")


def _patient_columns(mapping: Any) -> list[str]:
    """Columns a file mapping's Patient rules read: two rows equal on them give one Patient."""
    cols: list[str] = []
    for rule in mapping.resources:
        if rule.type == "Patient":
            text = rule.key + json.dumps(rule.body, ensure_ascii=False) + (rule.when or "")
            cols.extend(_COLUMN_REF.findall(text))
    return sorted(set(cols))


def _hl7_patient_key(raw: bytes) -> bytes | None:
    """The PID segment (the only part that makes the Patient); None for A40 (always mapped)."""
    head = raw[:200]
    if b"A40" in head:
        return None
    start = raw.find(b"\rPID|")
    if start < 0:
        return None
    end = raw.find(b"\r", start + 1)
    return raw[start : end if end > 0 else len(raw)]


def _patient_only(raw: bytes) -> bytes:
    """The message cut to MSH (as ADT^A08) + EVN + PID: maps to the same Patient as the
    whole message (checked on every HL7 feed of the nation) at a fraction of the cost of
    mapping every OBX of a lab result."""
    segs = [seg for seg in raw.replace(b"\n", b"\r").split(b"\r") if seg.strip()]
    out: list[bytes] = []
    for seg in segs:
        body = seg.lstrip(b"\x0b")
        if body.startswith(b"MSH") and not out:
            fields = body.split(b"|")
            if len(fields) > 8:
                fields[8] = b"ADT^A08^ADT_A01"
            out.append(b"|".join(fields))
        elif body[:4] in (b"PID|", b"EVN|"):
            out.append(body)
    return b"\r".join(out) + b"\r"


def _read_source(
    nation_dir: Path, src: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], list[tuple[str, str]]]]:
    """(Patient, A40 merges) for each distinct mapped patient record of one source.

    Messages and rows whose patient part was already seen are skipped before mapping (a
    patient appears in many visits, results and claims; mapping them all again would only
    repeat the same Patient), so a nation of 100k people reads in a couple of minutes.
    """
    from usmis.ingest.mapping import fhir as fhir_mapping
    from usmis.ingest.mapping import files as file_mapping
    from usmis.ingest.mapping import hl7v2

    sid = str(src["id"])
    fmt = str(src.get("format", ""))
    paths = [nation_dir / f for f in src.get("files") or []]
    seen: set[bytes] = set()
    mapping = None
    columns: list[str] = []
    if fmt not in ("hl7v2", "fhir-bundle"):
        full = file_mapping.load_mapping(sid, sid)
        columns = _patient_columns(full)
        if not columns:
            return
        # Only the Patient rules: claims, dispensations … are not the index's business.
        mapping = dataclasses.replace(
            full, resources=[r for r in full.resources if r.type == "Patient"]
        )
    for path in paths:
        if not path.exists():
            continue
        data = path.read_bytes()
        if mapping is not None:
            header, rows = file_mapping.split_file(data, mapping)
            for _line, row in rows:
                try:
                    values = file_mapping.decode_row(row, header, mapping)
                    key = "\x1f".join(str(values.get(c, "")) for c in columns).encode()
                    if key in seen:
                        continue
                    seen.add(key)
                    mapped = file_mapping.map_row(row, header, mapping, sid)
                except Exception:  # noqa: BLE001 - a malformed row is the generator's point
                    continue
                for p in _patients_of_bundle(mapped.bundle):
                    yield p, []
            continue
        payloads = hl7v2.split_messages(data) if fmt == "hl7v2" else data.splitlines()
        for raw in payloads:
            if not raw.strip():
                continue
            try:
                if fmt == "hl7v2":
                    pkey = _hl7_patient_key(raw)
                    if pkey is not None and pkey in seen:
                        continue
                    mapped = hl7v2.map_message(_patient_only(raw) if pkey else raw, sid)
                else:
                    doc = orjson.loads(raw)
                    pats = [orjson.dumps(p, option=orjson.OPT_SORT_KEYS)
                            for p in _patients_of_bundle(doc)]  # fmt: skip
                    if pats and all(p in seen for p in pats):
                        continue
                    pkey = b"".join(pats) if pats else None
                    mapped = fhir_mapping.map_payload(raw, sid)
            except Exception:  # noqa: BLE001 - a malformed message is the generator's point
                continue
            if pkey is not None:
                seen.add(pkey)
            merges = list(mapped.merges)
            for p in _patients_of_bundle(mapped.bundle):
                yield p, merges
                merges = []


def _raw_fields(patient: dict[str, Any], key: str) -> dict[str, Any]:
    """Plain lower-cased transliterations, no domain folding: what Splink's defaults get."""
    from anyascii import anyascii

    names = patient.get("name") or [{}]
    n = names[0]
    givens = n.get("given") or [""]
    iin = ""
    for ident in patient.get("identifier") or []:
        if ident.get("system") == "https://usmis.kz/sid/iin":
            iin = str(ident.get("value") or "")
    tel = next((t.get("value") for t in patient.get("telecom") or [] if t.get("value")), "")
    addr = (patient.get("address") or [{}])[0]
    return {
        "unique_id": key,
        "first_name": anyascii(str(givens[0])).lower() or None,
        "surname": anyascii(str(n.get("family") or "")).lower() or None,
        "patronymic": anyascii(" ".join(str(g) for g in givens[1:])).lower() or None,
        "dob": _iso_date(patient.get("birthDate")),
        "sex": _text(patient.get("gender")) or None,
        "iin": iin or None,
        "phone": "".join(ch for ch in str(tel) if ch.isdigit())[-10:] or None,
        "city": anyascii(str(addr.get("city") or "")).lower() or None,
    }


def _iso_date(value: Any) -> str | None:
    from datetime import date

    b = parse_birth(_text(value))
    try:
        return date(*b).isoformat() if b else None
    except ValueError:
        return None  # a typed 31 February: Splink's date comparison needs a real date


def read_truth(nation_dir: Path) -> dict[tuple[str, str], str]:
    """(source id, local patient id) → true person id."""
    path = nation_dir / TRUTH_FILE
    out: dict[tuple[str, str], str] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        src_col = next(c for c in cols if c in ("source_id", "source"))
        local_col = next(c for c in cols if c in ("local_id", "local_patient_id", "patient_id"))
        person_col = next(c for c in cols if c in ("person_id", "person", "true_person"))
        for row in reader:
            out[(row[src_col], row[local_col])] = row[person_col]
    return out


def load_sources(nation_dir: Path) -> list[dict[str, Any]]:
    doc = json.loads((nation_dir / "sources.json").read_text(encoding="utf-8"))
    if isinstance(doc, dict):
        doc = doc.get("sources", [])
    return [s for s in doc if isinstance(s, dict)]


_SourceResult = tuple[
    str, dict[str, tuple[MatchRecord, dict[str, Any] | None]], list[tuple[str, str]], int, str
]


def _read_one(args: tuple[Path, dict[str, Any], bool]) -> _SourceResult:
    """One source's records (run in a worker process)."""
    nation_dir, src, with_raw = args
    sid = str(src["id"])
    latest: dict[str, tuple[MatchRecord, dict[str, Any] | None]] = {}
    merges: list[tuple[str, str]] = []
    n = 0
    try:
        for patient, ms in _read_source(nation_dir, src):
            local = _local_id(sid, patient)
            if local is None:
                continue
            key = f"{sid}/{local}"
            latest[key] = (
                record_from_patient(key, patient),
                _raw_fields(patient, key) if with_raw else None,
            )
            merges.extend((f"{sid}/{a}", f"{sid}/{b}") for a, b in ms)
            n += 1
    except FileNotFoundError:
        return sid, {}, [], 0, "no file mapping for this source"
    except Exception as exc:  # noqa: BLE001 - report the source, keep evaluating
        return sid, {}, [], 0, f"unreadable feed ({type(exc).__name__})"
    return sid, latest, merges, n, ""


def read_nation(nation_dir: Path, *, with_raw: bool = False, workers: int = 1) -> Nation:
    """Every source patient record of the nation, normalised, with its true person.

    ``workers`` > 1 reads sources in parallel processes (0: one per core).  The default is
    one: on a shared 2-core machine the spawn overhead ate the gain.
    """
    import multiprocessing
    import os

    truth = read_truth(nation_dir)
    latest: dict[str, tuple[MatchRecord, dict[str, Any] | None]] = {}
    merges: list[tuple[str, str]] = []
    per_source: dict[str, int] = {}
    skipped: dict[str, str] = {}
    jobs = [(nation_dir, src, with_raw) for src in load_sources(nation_dir)]
    n_workers = workers or min(len(jobs), os.cpu_count() or 1)
    if n_workers > 1:
        with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
            results = list(pool.imap_unordered(_read_one, jobs))
    else:
        results = [_read_one(j) for j in jobs]
    for sid, recs, ms, n, error in results:
        if error:
            skipped[sid] = error
            continue
        latest.update(recs)
        merges.extend(ms)
        per_source[sid] = n
    records: list[MatchRecord] = []
    labels: list[str] = []
    raw: list[dict[str, Any]] = []
    unlabelled = 0
    for key in sorted(latest):
        rec, fields = latest[key]
        sid, _, local = key.partition("/")
        person = truth.get((sid, local))
        if person is None:
            unlabelled += 1
            continue
        records.append(rec)
        labels.append(person)
        if fields is not None:
            raw.append(fields)
    per_source = {s["id"]: per_source[s["id"]] for _, s, _ in jobs if s["id"] in per_source}
    return Nation(records, labels, merges, per_source, skipped, unlabelled, raw)


# ---------------------------------------------------------------------------- the runs


def iin_only_labels(records: list[MatchRecord]) -> list[str]:
    """The baseline: one person per checksum-valid IIN; every other record alone."""
    from usmis.mpi.iin import is_valid_iin

    return [f"iin:{r.iin}" if is_valid_iin(r.iin) else f"rec:{r.key}" for r in records]


def run_ours(nation: Nation) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    tracemalloc.start()
    started = time.perf_counter()
    result = batch.link_batch(nation.records, source_merges=nation.merges)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    fig = evaluation.score(
        result.clustering.labels, nation.truth, review_tasks=len(result.clustering.review)
    ).as_dict()
    fig.update(
        seconds=round(seconds, 2),
        python_peak_mb=round(peak / 2**20, 1),
        pairs_compared=result.n_pairs,
        deterministic_pairs=result.n_deterministic,
        refused_iin_conflicts=result.clustering.refused_conflicts,
        thresholds={"link": result.model.thresholds.link,
                    "review": result.model.thresholds.review},
        prior=result.model.prior,
    )  # fmt: skip
    return fig, result.clustering.labels


def run_baseline(nation: Nation) -> dict[str, Any]:
    started = time.perf_counter()
    labels = iin_only_labels(nation.records)
    fig = evaluation.score(labels, nation.truth).as_dict()
    fig["seconds"] = round(time.perf_counter() - started, 2)
    return fig


def run_splink(nation: Nation, *, threshold: float = 0.95) -> dict[str, Any]:
    """Splink (DuckDB) with its default comparisons, trained the usual way, clustered at
    ``threshold`` match probability.  Inputs: the same records, lower-cased
    transliterations only (no Kazakh/Russian folding: that is what "defaults" means)."""
    try:
        import duckdb
        import pyarrow as pa
        import splink.comparison_library as cl
        from splink import Linker, SettingsCreator, block_on
        from splink.internals.duckdb.database_api import DuckDBAPI
    except ImportError as exc:
        return {"error": f"splink is not installed ({exc.name}); pip install '.[mpi-bench]'"}
    if not nation.raw:
        return {"error": "raw fields were not read"}
    started = time.perf_counter()
    table = pa.Table.from_pylist(nation.raw)
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.NameComparison("first_name"),
            cl.NameComparison("surname"),
            cl.NameComparison("patronymic"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.ExactMatch("sex"),
            cl.ExactMatch("iin"),
            cl.ExactMatch("phone"),
            cl.ExactMatch("city"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("iin"),
            block_on("first_name", "dob"),
            block_on("surname", "dob"),
            block_on("phone"),
        ],
    )
    spill = tempfile.TemporaryDirectory(prefix="usmis-splink-")  # not DuckDB's ./.tmp
    try:
        db_api = DuckDBAPI(duckdb.connect(config={"temp_directory": spill.name}))
        linker = Linker(db_api.register(table, table_name="nation_records"), settings)
        training = linker.training
        training.estimate_probability_two_random_records_match([block_on("iin")], recall=0.9)
        training.estimate_u_using_random_sampling(max_pairs=1e6)
        # EM blocked on dob (estimates the names) and on first name + surname (estimates
        # the rest), as Splink's tutorials do; first name alone gives billions of pairs at
        # 100k people (it ran out of 24 GB).
        training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
        training.estimate_parameters_using_expectation_maximisation(
            block_on("first_name", "surname"))
        pred = linker.inference.predict(threshold_match_probability=0.5)
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            pred, threshold_match_probability=threshold
        ).as_record_list()
    except Exception as exc:  # noqa: BLE001 - report why the reference could not run
        return {"error": f"splink failed: {type(exc).__name__}: {str(exc)[:200]}"}
    finally:
        spill.cleanup()
    cluster_of = {str(r["unique_id"]): str(r["cluster_id"]) for r in clusters}
    labels = [cluster_of.get(r.key, r.key) for r in nation.records]
    fig = evaluation.score(labels, nation.truth).as_dict()
    fig["seconds"] = round(time.perf_counter() - started, 2)
    fig["threshold"] = threshold
    return fig


def evaluate_nation(nation_dir: Path, *, splink: bool = True) -> dict[str, Any]:
    """Ours, the IIN-only baseline and Splink on the nation's files (no database)."""
    started = time.perf_counter()
    nation = read_nation(nation_dir, with_raw=splink)
    out: dict[str, Any] = {
        "nation": str(nation_dir),
        "source_records": len(nation.records),
        "true_persons": len(set(nation.truth)),
        "records_per_source": nation.read_per_source,
        "skipped_sources": nation.skipped_sources,
        "unlabelled_records": nation.unlabelled,
        "source_merges": len(nation.merges),
        "read_seconds": round(time.perf_counter() - started, 2),
    }
    out["usmis"], _ = run_ours(nation)
    out["iin_only"] = run_baseline(nation)
    if splink:
        out["splink"] = run_splink(nation)
    return out


def evaluate_links(conn: Connection, settings: Settings, nation_dir: Path) -> dict[str, Any]:
    """The links stored in the database scored against the nation's ground truth."""
    from usmis.fhir.service import FhirService
    from usmis.mpi import repository as repo
    from usmis.mpi import service

    truth = read_truth(nation_dir)
    person_of = {pid: person for pid, person, _ in repo.all_links(conn)}
    svc = FhirService(conn, service.keyring(settings))
    predicted: list[str] = []
    true: list[str] = []
    unlinked = unlabelled = 0
    for res in svc.iter_resources("Patient"):
        pid = str(res["id"])
        sid = next(
            (
                str(i.get("system"))[len(SOURCE_PATIENT_PREFIX) :].split("/")[0]
                for i in res.get("identifier") or []
                if str(i.get("system") or "").startswith(SOURCE_PATIENT_PREFIX)
            ),
            "",
        )
        local = _local_id(sid, res) if sid else None
        person = truth.get((sid, local)) if local else None
        if person is None:
            unlabelled += 1
            continue
        if pid not in person_of:
            unlinked += 1
            continue
        predicted.append(service.resolve_person(conn, person_of[pid]))
        true.append(person)
    review = service.stats(conn)["review_open"]
    fig = evaluation.score(predicted, true, review_tasks=int(review)).as_dict()
    fig.update(unlinked_patients=unlinked, unlabelled_patients=unlabelled)
    return fig
