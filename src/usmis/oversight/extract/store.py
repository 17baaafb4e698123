"""The production extract: linked data from the USMIS store, incremental, pseudonymised.

Reads every resource type the rules need through the FHIR service API
(``FhirService.iter_resources(type, since=watermark)``, docs/fhir.md) and the patient
index's current links (``mpi_link``: source Patient → person key), maps them with
:mod:`.fhir_map` and writes one new Parquet part per table.  Only what changed since the
last run is read (the watermark is the newest ``meta.lastUpdated`` seen, kept in
``oversight_watermark``); readers keep the newest version of each source record.  Links
change without the resources changing: the rows of a source Patient whose patient-index
link moved since the previous run (``mpi_link_event``: merge, split, unlink, relink,
revert, a registrar's link) are written again with the new person key (:func:`_rekey`;
the links' own watermark is a second ``oversight_watermark`` row).  ``full=True``
re-reads everything.

The person key in the extract is HMAC(oversight key, MPI person key); the mapping back is
kept in ``oversight_pseudonym`` for the audited re-identification only.
"""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from usmis.config import Settings
from usmis.kit.db import make_engine, transaction
from usmis.kit.errors import UsmisError
from usmis.oversight import audit_bridge, model
from usmis.oversight import repository as repo
from usmis.oversight.extract import fhir_map as fm
from usmis.oversight.extract.schema import TABLES
from usmis.oversight.extract.writer import (
    Manifest,
    conform,
    latest_rows,
    read_manifest,
    write_manifest,
    write_part,
)

if TYPE_CHECKING:
    from usmis.fhir.service import FhirService

TYPES = ("Organization", "Practitioner", "PractitionerRole", "Patient", "EpisodeOfCare",
         "Encounter", "Condition", "MedicationDispense", "Observation", "DiagnosticReport",
         "Claim", "PaymentReconciliation", "ChargeItemDefinition", "MedicationKnowledge")
# The types of a source Patient's compartment that give extract rows (see _relinked).
COMPARTMENT = ("Patient", "EpisodeOfCare", "Encounter", "Condition", "MedicationDispense",
               "Observation", "DiagnosticReport", "Claim")


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
    links_name = "links|" + name[-58:]
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
            # Link changes first, then the links: a change made in between is read again
            # next time rather than missed.
            links_since = None if since is None else (
                _aware(repo.get_watermark(conn, links_name)) or since)
            moved, merged, links_mark = _link_changes(conn, links_since)
            # The patient index's current links, read in bulk (one query, not one per record).
            links = {r.patient_id: r.person_key for r in conn.execute(
                sa.select(mpi_link.c.patient_id, mpi_link.c.person_key))}
            svc = FhirService(conn, keyring_for(settings.resolved_key_file))

            def alias_of(person: str) -> str:
                alias = model.pseudonym(key, person)
                pseudonyms[alias] = person
                return alias

            def person_of(patient_id: str | None) -> str | None:
                person = links.get(patient_id or "")
                return None if person is None else alias_of(person)

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

            # The person of each clinical source record ("system|record id"), and whether
            # a person joins more than one source Patient: see _billed_person.
            record_person: dict[str, str] = {}
            cluster = Counter(links.values())

            def linked(alias: str) -> bool:
                return cluster.get(pseudonyms.get(alias, ""), 0) > 1

            # Claim resource id → claim_id, for payments naming a claim as Claim/<id>.
            claim_ids: dict[str, str] = {}

            def claim_of(res_id: str) -> str | None:
                if res_id not in claim_ids:
                    try:
                        claim_ids[res_id] = fm.claim_key(svc.read("Claim", res_id))
                    except UsmisError:
                        return None
                return claim_ids[res_id]

            for rtype in TYPES[2:]:
                for res in svc.iter_resources(rtype, since=since):
                    stamp = _last_updated(res)
                    if since is not None and stamp is not None and stamp <= since:
                        continue  # already in an earlier increment
                    if stamp and (newest is None or stamp > newest):
                        newest = stamp
                    if rtype == "Claim":
                        claim_ids[str(res.get("id"))] = fm.claim_key(res)
                    elif rtype == "PaymentReconciliation":
                        _stamp(fm.payment_rows(res, org_of, claim_of), stamp, rows["payments"])
                        continue
                    if rtype == "DiagnosticReport":  # the lab order lab claims bill
                        record, alias = fm.report_record(res, person_of)
                        if alias:
                            record_person.setdefault(record, alias)
                        continue
                    before = {t: len(r) for t, r in rows.items()}
                    _map(rtype, res, rows, person_of, org_of, prac_of, stamp)
                    if rtype == "Claim":
                        _billed_person(rows, before, record_person, linked)
                    elif rtype in _CLINICAL:
                        for table in _CLINICAL[rtype]:
                            for row in rows[table][before.get(table, 0):]:
                                if row.get("person_key"):
                                    record_person.setdefault(
                                        f"{row['source_system']}|{row['source_record_id']}",
                                        row["person_key"])
            # Links that changed since the last run: rows written again with a new person.
            def mapper(rtype: str, res: dict[str, Any],
                       into: defaultdict[str, list[dict[str, Any]]], stamp: datetime | None
                       ) -> None:
                _map(rtype, res, into, person_of, org_of, prac_of, stamp)

            def own_person(claim: dict[str, Any]) -> str | None:
                found = svc.search_ids("Claim", f"identifier={fm.SOURCE_PREFIX}"
                                       f"{claim['source_system']}/claim|"
                                       f"{_claim_key(claim).split('|', 1)[1]}", limit=1)
                if not found:
                    return None
                patient = (svc.read("Claim", found[0]).get("patient") or {}).get("reference")
                return person_of(str(patient or "").rpartition("/")[2])

            rekeyed = _relinked_rows(
                root, svc, links, moved, merged, since, mapper=mapper, alias=alias_of,
                linked=linked, own_person=own_person, key=key)
            repo.save_pseudonyms(conn, sorted(pseudonyms.items()))
            repo.set_watermark(conn, name, newest or since)
            repo.set_watermark(conn, links_name, links_mark or links_since)
            audit_bridge.record_extract(
                conn, settings, {t: len(r) for t, r in rows.items()},
                since.isoformat() if since else "")
    finally:
        engine.dispose()
    for table, table_rows in rekeyed.items():
        rows[table].extend(table_rows)  # after this run's own rows: those win
    previous = read_manifest(root)
    seq = (previous.parts if previous else 0) + 1
    counts: dict[str, int] = dict(previous.rows) if previous else {}
    for table, table_rows in rows.items():
        table_rows = merge_records(table_rows)
        if table_rows:
            write_part(root, table, conform(table, table_rows), seq)
            counts[table] = counts.get(table, 0) + len(table_rows)
    mark = newest or since
    if as_of is None:
        as_of = observed_until(rows, previous.as_of if previous else None)
    manifest = Manifest(
        builder="store", as_of=as_of.isoformat(),
        watermark=mark.isoformat() if mark else "",
        parts=seq, rows=counts,
    )
    write_manifest(root, manifest)
    return manifest


def _aware(value: datetime | None) -> datetime | None:
    """SQLite keeps naive UTC; PostgreSQL returns aware timestamps."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _link_changes(conn: sa.Connection, since: datetime | None
                  ) -> tuple[dict[str, str | None], dict[str, str], datetime | None]:
    """What the patient index changed after ``since``: the source Patients whose link moved
    (→ the person they had before), the persons merged away (→ the person they are now),
    and the time of the newest change of all (the next links watermark).  Nothing when
    ``since`` is None: a full run reads everything.

    Every link change is a row of ``mpi_link_event`` with its time: merge, split, unlink,
    relink, revert, a registrar's link.  A record's *first* link (action ``link`` without a
    previous person) is left out: the patient index makes it when the Patient is stored
    (ingest, same transaction), so the Patient and its compartment are new resources that
    the ``lastUpdated`` scan reads anyway.
    """
    from usmis.mpi.service import resolve_person
    from usmis.mpi.tables import link_event as ev

    mark = _aware(conn.execute(sa.select(sa.func.max(ev.c.at))).scalar())
    if since is None:
        return {}, {}, mark
    first_link = sa.and_(ev.c.action == "link", ev.c.previous_person_key.is_(None))
    moved: dict[str, str | None] = {}
    merged: dict[str, str] = {}
    for row in conn.execute(
            sa.select(ev.c.action, ev.c.patient_id, ev.c.previous_person_key)
            .where(ev.c.at > since, sa.not_(first_link)).order_by(ev.c.at, ev.c.id)):
        if row.patient_id is not None:
            moved.setdefault(row.patient_id, row.previous_person_key)  # the earliest
        elif row.action == "merge-person" and row.previous_person_key:
            merged[row.previous_person_key] = ""
    for old in list(merged):
        merged[old] = resolve_person(conn, old)
        if merged[old] == old:  # merged and reverted since
            del merged[old]
    return moved, merged, mark


Mapper = Callable[[str, dict[str, Any], defaultdict[str, list[dict[str, Any]]], datetime | None],
                  None]


# (resource type, extract table, row under the current links, person key it had before)
Mapped = tuple[str, str, dict[str, Any], str | None]


def _relinked(svc: FhirService, patients: dict[str, str | None], since: datetime | None,
              mapper: Mapper, types: tuple[str, ...] = COMPARTMENT) -> list[Mapped]:
    """The rows of these Patients' compartments (``Patient/$everything``) that an earlier
    increment holds (``lastUpdated`` at or before ``since``; newer ones are this run's
    own rows), clinical resources' rows before claims' (as in :func:`merge_records`)."""
    out: list[Mapped] = []
    for patient_id, old in patients.items():
        offset = 0
        while True:
            try:
                page, total = svc.everything(patient_id, types=list(types),
                                             count=500, offset=offset)
            except UsmisError:  # the Patient is gone: nothing of it to re-key
                break
            for stored in page:
                res = orjson.loads(stored.body) if stored.body else None
                stamp = _last_updated(res) if res else None
                if res and (since is None or stamp is None or stamp <= since):
                    scratch: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
                    mapper(stored.resource_type, res, scratch, stamp)
                    out += [(stored.resource_type, table, row, old)
                            for table, items in scratch.items() for row in items]
            offset += len(page)
            if not page or offset >= total:
                break
    return sorted(out, key=lambda m: m[0] == "Claim")


def _relinked_rows(root: Path, svc: FhirService, links: dict[str, str],
                   moved: dict[str, str | None], merged: dict[str, str], since: datetime | None,
                   *, mapper: Mapper, alias: Callable[[str], str], linked: Callable[[str], bool],
                   own_person: Callable[[dict[str, Any]], str | None], key: bytes
                   ) -> dict[str, list[dict[str, Any]]]:
    """The rows whose person a link change altered, with their new person key.

    ``moved``: source Patient → the person it had at the previous run; ``merged``: person
    merged away → the person it is now.  Besides the moved records' own rows, a fund
    claim's person depends on the record it bills (:func:`_billed_person`: that record's
    person when it joins more than one source record, else the claim's own), so the
    clinical records of every person that gained or lost a record are read as well.
    """
    if not moved:
        return {}
    rows = _relinked(svc, {p: model.pseudonym(key, o) if o else None for p, o in moved.items()},
                     since, mapper)
    changed = {links[p] for p in moved if p in links} | {o for o in moved.values() if o}
    members = dict.fromkeys(sorted(p for p, person in links.items()
                                   if person in changed and p not in moved))
    records: dict[str, str | None] = {}  # clinical record "system|id" → its person now
    for rtype, table, row, _ in rows + _relinked(svc, members, since, mapper,
                                                 types=_BILLING_TYPES):
        if table in _BILLED and rtype != "Claim":
            records.setdefault(f"{row['source_system']}|{row['source_record_id']}",
                               row.get("person_key"))
    return _rekey(root, rows, {model.pseudonym(key, o): alias(n) for o, n in merged.items()},
                  records, {r: p if p and linked(p) else None for r, p in records.items()},
                  own_person)


def _rekey(root: Path, relinked: list[Mapped], merged: dict[str, str],
           records: dict[str, str | None], billed: dict[str, str | None],
           own_person: Callable[[dict[str, Any]], str | None]
           ) -> dict[str, list[dict[str, Any]]]:
    """The extract's current rows whose person changed, with the new person key: the
    person a full run would give them now.

    A row is rewritten from the extract itself, not from its resource mapped again: a
    stay or a dispensation is one row merged from the clinical resource and the fund's
    claim (:func:`merge_records`), of which only one may belong to a moved record.  Such a
    row has its clinical record's person (``records``).  A claim billing a record of
    ``billed`` takes that record's person (``None``: not linked to any other record, so
    the person of the claim's own Patient, ``own_person``), and so do the diagnoses it
    carries.  Any other row of a moved record changes when it carries the person the
    record had before; a row carrying a person merged away takes the one it merged into.
    A moved record's row that no increment holds yet (its Patient was not linked then) is
    added as mapped.
    """
    want: defaultdict[str, dict[tuple[str, str], tuple[str | None, dict[str, Any]]]] = \
        defaultdict(dict)
    for _, table, row, old in relinked:  # the clinical record's row first
        want[table].setdefault((row["source_system"], row["source_record_id"]), (old, row))
    out: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    claim_person: dict[str, str] = {}  # "system|claim" → the person its bill gives it
    for table in sorted(TABLES, key=lambda t: t != "claims"):  # claims before diagnoses
        if "person_key" not in TABLES[table].names:
            continue
        wanted = want.get(table, {})
        bills = billed if table == "claims" else {}
        dx = claim_person if table == "diagnoses" else {}
        where = {"person_key": sorted(merged), "record_id": sorted(bills),
                 _CLAIM_OF_DIAGNOSIS: sorted(dx)}
        if not (wanted or any(where.values())):
            continue
        seen = set()
        for row in latest_rows(root, table, list(wanted), where):
            record = (row["source_system"], row["source_record_id"])
            seen.add(record)
            old_row = wanted.get(record)
            clinical = records.get("|".join(record)) if table in _MERGED else None
            new: str | None
            if row.get("record_id") in bills:
                new = bills[row["record_id"]] or own_person(row)
                if new is not None:
                    claim_person[_claim_key(row)] = new
            elif _claim_key(row) in dx:
                new = dx[_claim_key(row)]
            elif clinical is not None:
                new = clinical
            elif old_row is not None and row["person_key"] == old_row[0]:
                new = old_row[1]["person_key"]
            else:
                new = merged.get(row["person_key"], row["person_key"])
            if new is not None and new != row["person_key"]:
                row["person_key"] = new
                out[table].append(row)
        out[table] += [mapped for record, (_, mapped) in wanted.items() if record not in seen]
    return out


def _claim_key(row: dict[str, Any]) -> str:
    """``system|claim record`` of a claim line or of a diagnosis a claim carries."""
    record = str(row["source_record_id"]).split("#dx")[0].split("#")[0]
    return f"{row['source_system']}|{record}"


# A claim's diagnosis rows (fhir_map.claim_rows: "<claim record>#dx<n>") → "system|claim".
_CLAIM_OF_DIAGNOSIS = ("CASE WHEN contains(source_record_id, '#dx') THEN source_system || '|' "
                       "|| regexp_replace(source_record_id, '#dx[0-9]+$', '') END")

# The rows (of moved records) a claim line may bill: see _billed_person.
_BILLED = ("encounters", "dispensations", "lab_tests", "lab_orders")
_BILLING_TYPES = ("Encounter", "MedicationDispense", "Observation", "DiagnosticReport")
# Tables whose row merges a clinical record and the fund's claim for it (merge_records).
_MERGED = ("stays", "dispensations")

# The clinical resources whose rows name the source record a claim line bills.
_CLINICAL = {"Encounter": ("encounters",), "MedicationDispense": ("dispensations",),
             "Observation": ("lab_tests",)}


def _billed_person(rows: defaultdict[str, list[dict[str, Any]]], before: dict[str, int],
                   record_person: dict[str, str], linked: Callable[[str], bool]) -> None:
    """Give a claim the person of the clinical record it bills, when that is known.

    A fund claim identifies the insured by IIN alone.  When the IIN is missing or invalid
    the fund's Patient has nothing the patient index can match (no name, no birth date) and
    stays a person of its own; when it is mistyped into another valid IIN it is linked to
    that other person.  Either way the claim is cut off from the diagnoses, stays and
    registry events of the person who received the care, and rules judge it against the
    wrong life.  The claim also names the clinical record it bills (supportingInfo
    source-record), whose patient the index linked on full demographics: that link is the
    better evidence of whose care was paid for, so it wins — when the index did link it
    to other records (a record that is a person of its own, e.g. a pharmacy's patient
    without IIN left unmatched, is no better than the claim's IIN).  (A claim whose IIN
    disagrees with its record is itself worth a look; no rule reports it yet.)  Only records read in
    the same run are known here: a claim arriving in a later increment than its record
    keeps its own person until a ``full`` run.
    """
    claims = rows["claims"][before.get("claims", 0):]
    person = next((record_person[c["record_id"]] for c in claims
                   if c.get("record_id") in record_person), None)
    if person is None or not linked(person):
        return
    for table in ("claims", "stays", "dispensations", "diagnoses"):
        for row in rows[table][before.get(table, 0):]:
            row["person_key"] = person


# Dated columns that say how far the data reaches (the end of the observation window).
_ACTIVITY = {"claims": "service_date", "encounters": "encounter_date",
             "stays": "discharge_date", "dispensations": "dispense_date",
             "lab_tests": "test_date"}


def observed_until(rows: dict[str, list[dict[str, Any]]], previous: str | None) -> date:
    """The extract's ``as_of``: the latest activity date in the data, never after today.

    Why not simply today: the 24-month "no contact" window of phantom_attachment must end
    where the data ends.  Months the store holds no feed for yet (a late load, a synthetic
    nation ingested after its end) would otherwise count as months without any contact.
    """
    today = datetime.now(UTC).date()
    latest: date | None = date.fromisoformat(previous) if previous else None
    for table, column in _ACTIVITY.items():
        for row in rows.get(table, ()):
            value = row.get(column)
            if isinstance(value, date) and value <= today and (latest is None or value > latest):
                latest = value
    return latest or today


def merge_records(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per source record (``source_system``, ``source_record_id``).

    A record reaches the store by more than one channel: an inpatient stay as the
    hospital's Encounter and as the fund's institutional Claim; a dispensation as the
    pharmacy's MedicationDispense and as the fund's pharmacy Claim.  Counting both would
    make every stay overlap itself (two_places) and double every dispensation.  The first
    row seen (the clinical resource: TYPES reads it before Claim) wins; its empty columns
    are filled from the later ones (the claim's case group, the prescriber).
    """
    merged: dict[tuple[Any, Any], dict[str, Any]] = {}
    for item in items:
        key = (item.get("source_system"), item.get("source_record_id"))
        seen = merged.get(key)
        if seen is None:
            merged[key] = item
            continue
        for column, value in item.items():
            if seen.get(column) is None and value is not None:
                seen[column] = value
    return list(merged.values())


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
    elif rtype == "DiagnosticReport":  # not an extract table: the lab order claims bill
        record, person_key = fm.report_record(res, person_of)
        system, _, order = record.partition("|")
        add("lab_orders", [{"source_system": system, "source_record_id": order,
                            "person_key": person_key}])
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
