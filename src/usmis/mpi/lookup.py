"""Look-ups for other systems: ``Patient/$match`` (IHE PDQm ITI-119) and ``$ihe-pix``
(IHE PIXm ITI-83).

$match scores the Patient given against the index exactly like the real-time linker, and
answers with one entry per candidate *person*: that person's best-matching source Patient,
``search.score`` = match probability and the FHIR match-grade extension (certain /
probable / possible).  The Patients are read through the FHIR service with the caller's
access context, so the policy decides what the caller may see.

$ihe-pix answers "which identifiers does this person have in other systems": the
identifiers and ids of every source Patient linked to the person of the one named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from usmis.config import Settings
from usmis.fhir.context import AccessContext
from usmis.fhir.service import FhirService
from usmis.kit.errors import BadRequest, NotFound
from usmis.mpi import fs, service
from usmis.mpi.model import record_from_patient

MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
# How far below the review threshold a candidate is still worth showing as "possible".
POSSIBLE_MARGIN = 4.0


@dataclass
class MatchResult:
    person_key: str
    patient_id: str
    weight: float
    probability: float
    grade: str


def grade(candidate: service.Candidate, thresholds: fs.Thresholds) -> str | None:
    if candidate.deterministic or candidate.weight >= thresholds.link:
        return "certain"
    if candidate.weight >= thresholds.review:
        return "probable"
    if candidate.weight >= thresholds.review - POSSIBLE_MARGIN:
        return "possible"
    return None


def match(
    conn: Connection,
    settings: Settings,
    patient: dict[str, Any],
    *,
    count: int = 10,
    only_certain: bool = False,
) -> list[MatchResult]:
    """Scored candidate persons for a Patient resource that need not be stored."""
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise BadRequest("the resource parameter must be a Patient", expression=["resource"])
    record = record_from_patient("$match", patient)
    model = service.current_model(conn)
    out: list[MatchResult] = []
    for cand in service.score_candidates(conn, settings, record, model=model):
        g = grade(cand, model.thresholds)
        if g is None or (only_certain and g != "certain"):
            continue
        out.append(MatchResult(cand.person_key, cand.patient_id, cand.weight, cand.probability, g))
    if only_certain and len(out) > 1:
        return []  # ITI-119: only a single certain match may be returned
    return out[:count]


def match_bundle(
    conn: Connection,
    settings: Settings,
    access: AccessContext,
    parameters: Any,
    *,
    base_url: str = "",
) -> dict[str, Any]:
    """The ITI-119 response Bundle for a ``Parameters`` request body."""
    patient, count, only_certain = _match_parameters(parameters)
    results = match(conn, settings, patient, count=count, only_certain=only_certain)
    svc = FhirService(conn, service.keyring(settings), access, base_url=base_url)
    entries = []
    for r in results:
        resource = svc.read("Patient", r.patient_id)
        entries.append(
            {
                "fullUrl": f"{base_url}/Patient/{r.patient_id}",
                "resource": resource,
                "search": {
                    "mode": "match",
                    "score": round(r.probability, 6),
                    "extension": [{"url": MATCH_GRADE_URL, "valueCode": r.grade}],
                },
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "total": len(entries)}
    if entries:  # R4 JSON has no empty arrays
        bundle["entry"] = entries
    return bundle


def _match_parameters(parameters: Any) -> tuple[dict[str, Any], int, bool]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise BadRequest("the body must be a Parameters resource", expression=["Parameters"])
    patient: dict[str, Any] | None = None
    count = 10
    only_certain = False
    for p in parameters.get("parameter") or []:
        if not isinstance(p, dict):
            continue
        name = p.get("name")
        if name == "resource":
            patient = p.get("resource")
        elif name == "count":
            value = p.get("valueInteger")
            if not isinstance(value, int) or value < 1:
                raise BadRequest("count must be a positive integer",
                                 expression=["Parameters.parameter.valueInteger"])  # fmt: skip
            count = min(value, 100)
        elif name == "onlyCertainMatches":
            only_certain = bool(p.get("valueBoolean"))
    if not isinstance(patient, dict):
        raise BadRequest("the resource parameter (a Patient) is required",
                         expression=["Parameters.parameter.resource"])  # fmt: skip
    return patient, count, only_certain


def cross_reference(
    conn: Connection,
    settings: Settings,
    access: AccessContext,
    source_identifier: str,
    target_systems: list[str] | None = None,
    *,
    base_url: str = "",
) -> dict[str, Any]:
    """ITI-83: the Parameters listing the person's identifiers in other systems."""
    system, sep, value = source_identifier.partition("|")
    if not sep or not system or not value:
        raise BadRequest("sourceIdentifier must be system|value", expression=["sourceIdentifier"])
    svc = FhirService(conn, service.keyring(settings), access, base_url=base_url)
    ids = svc.search_ids("Patient", f"identifier={source_identifier}", limit=50)
    persons = {p for p in (service.person_of(conn, i) for i in ids) if p}
    if not persons:
        raise NotFound("no Patient with that identifier is known", expression=["sourceIdentifier"])
    params: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for person in sorted(persons):
        for pid in service.patients_of(conn, person):
            res = svc.read("Patient", pid)
            params.append({"name": "targetId", "valueReference": {"reference": f"Patient/{pid}"}})
            for ident in res.get("identifier") or []:
                sys_, val = str(ident.get("system") or ""), str(ident.get("value") or "")
                if (sys_, val) == (system, value) or (sys_, val) in seen or not val:
                    continue
                if target_systems and sys_ not in target_systems:
                    continue
                seen.add((sys_, val))
                params.append({"name": "targetIdentifier",
                               "valueIdentifier": {"system": sys_, "value": val}})  # fmt: skip
    return {"resourceType": "Parameters", "parameter": params}
