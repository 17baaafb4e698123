"""The production extract: linked data from the USMIS store, incremental, pseudonymised.

Reads every resource type the rules need through the FHIR service API
(``FhirService.iter_resources(type, since=watermark)``, docs/fhir.md) and the patient
index's current links (``mpi_link``: source Patient → person key), maps them with
:mod:`.fhir_map` and writes one new Parquet part per table.  Only what changed since the
last run is read (the watermark is the newest ``meta.lastUpdated`` seen, kept in
``oversight_watermark``); readers keep the newest version of each source record.  After a
patient-index relink, run with ``full=True``: links change without the resources changing.

The person key in the extract is HMAC(oversight key, MPI person key); the mapping back is
kept in ``oversight_pseudonym`` for the audited re-identification only.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from usmis.config import Settings
from usmis.kit.db import make_engine, transaction
from usmis.oversight import audit_bridge, model
from usmis.oversight import repository as repo
from usmis.oversight.extract import fhir_map as fm
from usmis.oversight.extract.writer import (
    Manifest,
    conform,
    read_manifest,
    write_manifest,
    write_part,
)

TYPES = ("Organization", "Practitioner", "PractitionerRole", "Patient", "EpisodeOfCare",
         "Encounter", "Condition", "MedicationDispense", "Observation", "Claim",
         "ChargeItemDefinition", "MedicationKnowledge")


def _last_updated(res: dict[str, Any]) -> datetime | None:
    value = (res.get("meta") or {}).get("lastUpdated")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_store_extract(settings: Settings, *, out: Path | None = None, full: bool = False,
                        as_of: date | None = None) -> Manifest:
    from usmis.fhir.service import FhirService
    from usmis.kit.crypto import keyring_for
    from usmis.mpi.tables import link as mpi_link
    from usmis.oversight.service import extract_dir, key_path

    root = out or extract_dir(settings)
    name = str(root.resolve())[-64:]
    key = model.load_or_create_key(key_path(settings))
    engine = make_engine(settings.resolved_database_url)
    rows: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    pseudonyms: dict[str, str] = {}
    newest: datetime | None = None
    try:
        with transaction(engine) as conn:
            since = None if full else repo.get_watermark(conn, name)
            if since is not None and since.tzinfo is None:  # SQLite keeps naive UTC
                since = since.replace(tzinfo=UTC)
            manifest = None if full else read_manifest(root)
            if manifest is None and root.exists():
                shutil.rmtree(root)
                since = None
            # The patient index's current links, read in bulk (one query, not one per record).
            links = {r.patient_id: r.person_key for r in conn.execute(
                sa.select(mpi_link.c.patient_id, mpi_link.c.person_key))}
            svc = FhirService(conn, keyring_for(settings.resolved_key_file))

            def person_of(patient_id: str | None) -> str | None:
                person = links.get(patient_id or "")
                if person is None:
                    return None
                alias = model.pseudonym(key, person)
                pseudonyms[alias] = person
                return alias

            # Organizations are few: always read all, so references resolve to BINs.
            org_bin: dict[str, str] = {}
            for res in svc.iter_resources("Organization"):
                row = fm.organization_row(res)
                org_bin[str(res.get("id"))] = str(row["org_id"])
                if since is None or (_last_updated(res) or since) > since:
                    rows["organizations"].append(row)

            def org_of(org_id: str | None) -> str | None:
                return org_bin.get(org_id or "", org_id)

            # Practitioners too: roles refer to them by resource id, claims by registry id.
            prac_code: dict[str, str] = {}
            for res in svc.iter_resources("Practitioner"):
                prac, licences = fm.practitioner_rows(res)
                prac_code[str(res.get("id"))] = str(prac["practitioner_id"])
                stamp = _last_updated(res)
                if since is None or (stamp or since) > since:
                    _stamp([prac], stamp, rows["practitioners"])
                    _stamp(licences, stamp, rows["licences"])

            def prac_of(res_id: str | None) -> str | None:
                return prac_code.get(res_id or "", res_id)

            for rtype in TYPES[2:]:
                for res in svc.iter_resources(rtype, since=since):
                    stamp = _last_updated(res)
                    if since is not None and stamp is not None and stamp <= since:
                        continue  # already in an earlier increment
                    if stamp and (newest is None or stamp > newest):
                        newest = stamp
                    _map(rtype, res, rows, person_of, org_of, prac_of, stamp)
            repo.save_pseudonyms(conn, sorted(pseudonyms.items()))
            repo.set_watermark(conn, name, newest or since)
            audit_bridge.record_extract(
                conn, settings, {t: len(r) for t, r in rows.items()},
                since.isoformat() if since else "")
    finally:
        engine.dispose()
    previous = read_manifest(root)
    seq = (previous.parts if previous else 0) + 1
    counts: dict[str, int] = dict(previous.rows) if previous else {}
    for table, table_rows in rows.items():
        if table_rows:
            write_part(root, table, conform(table, table_rows), seq)
            counts[table] = counts.get(table, 0) + len(table_rows)
    mark = newest or since
    manifest = Manifest(
        builder="store", as_of=(as_of or datetime.now(UTC).date()).isoformat(),
        watermark=mark.isoformat() if mark else "",
        parts=seq, rows=counts,
    )
    write_manifest(root, manifest)
    return manifest


def _stamp(items: list[dict[str, Any]], stamp: datetime | None,
           into: list[dict[str, Any]]) -> None:
    for item in items:
        item["last_updated"] = stamp.replace(tzinfo=None) if stamp else None
        into.append(item)


def _map(rtype: str, res: dict[str, Any], rows: defaultdict[str, list[dict[str, Any]]],
         person_of: fm.PersonOf, org_of: Any, prac_of: Any, stamp: datetime | None) -> None:
    def add(table: str, items: list[dict[str, Any]]) -> None:
        _stamp(items, stamp, rows[table])

    if rtype == "Patient":
        person_key = person_of(str(res.get("id")))
        if person_key is None:
            return
        person, events = fm.patient_rows(res, person_key)
        add("persons", [person])
        add("life_events", events)
    elif rtype == "PractitionerRole":
        add("employments", fm.role_rows(res, org_of, prac_of))
    elif rtype == "EpisodeOfCare":
        add("attachments", fm.attachment_rows(res, person_of, org_of))
    elif rtype == "Encounter":
        encounters, stays = fm.encounter_rows(res, person_of, org_of)
        add("encounters", encounters)
        add("stays", stays)
    elif rtype == "Condition":
        add("diagnoses", fm.condition_rows(res, person_of))
    elif rtype == "MedicationDispense":
        add("dispensations", fm.dispense_rows(res, person_of, org_of))
    elif rtype == "Observation":
        add("lab_tests", fm.observation_rows(res, person_of, org_of))
        add("life_events", fm.life_event_rows(res, person_of))
    elif rtype == "Claim":
        for table, items in fm.claim_rows(res, person_of, org_of).items():
            add(table, items)
    elif rtype == "ChargeItemDefinition":
        tariff = fm.tariff_row(res)
        if tariff is not None:
            add("tariffs", [tariff])
    elif rtype == "MedicationKnowledge":
        drugs, indications = fm.medication_rows(res)
        add("tariffs", drugs)
        add("indications", indications)
