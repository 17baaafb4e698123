"""Pure FHIR helpers: ids, compartments, references, OperationOutcome.  No I/O.

The types the API supports fully (search parameters, compartment) are :data:`CORE_TYPES`;
every other valid R4 resource type is stored and readable, searchable by ``_id`` and
``_lastUpdated`` only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from usmis.kit.errors import UsmisError

CORE_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Encounter",
    "EpisodeOfCare",
    "Condition",
    "Observation",
    "Procedure",
    "DiagnosticReport",
    "MedicationRequest",
    "MedicationDispense",
    "Immunization",
    "AllergyIntolerance",
    "DocumentReference",
    "Coverage",
    "Claim",
    "ClaimResponse",
    "ExplanationOfBenefit",
    "Consent",
    "Provenance",
    "AuditEvent",
)
# Written only by the audit log itself, never through the FHIR API (issue 3).
READ_ONLY_TYPES = frozenset({"AuditEvent"})

# R4 CompartmentDefinition-patient, reduced to the element that names *the* patient of a
# record (the first Patient reference found in this order).  Who performed or recorded a
# resource does not put it in that person's compartment here: `patient_id` is the one
# subject the access policy protects.
_COMPARTMENT_PATHS = ("patient", "subject", "beneficiary", "for", "policyHolder")


def new_id() -> str:
    """A new resource id, never derived from an identifier (privacy): a UUID in the
    version-7 layout of RFC 9562 — the milliseconds since the epoch, then 74 random bits.

    Time-ordered on purpose: the ids go into seven B-tree indexes (the primary key, the
    search indexes' ``res_id``, the patient and reference targets), and random ids put
    every insert on a random page of each — once the indexes outgrow the buffer cache,
    that is a page read and a dirty page per index per resource.  What it reveals is the
    creation time, which the first version's ``meta.lastUpdated`` says already."""
    rand = int.from_bytes(os.urandom(10))  # 12 + 62 random bits used
    value = ((time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
             | 0b10 << 62 | rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_utc() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=256)  # a Bundle's resources share one time
def instant(ts: datetime) -> str:
    """FHIR instant with milliseconds, UTC ("2026-11-27T00:12:14.123Z")."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def reference_id(ref: Any, resource_type: str) -> str | None:
    """The id in ``{"reference": "Type/id"}`` (relative or absolute), if it is that type."""
    if not isinstance(ref, dict):
        return None
    value = ref.get("reference")
    if not isinstance(value, str):
        return None
    parts = value.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return parts[-1]
    return None


def compartment_patient(resource: dict[str, Any]) -> str | None:
    """The id of the Patient whose compartment ``resource`` is in, or None."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    if rtype == "Provenance":
        for target in resource.get("target") or []:
            pid = reference_id(target, "Patient")
            if pid:
                return pid
    for key in _COMPARTMENT_PATHS:
        value = resource.get(key)
        for item in value if isinstance(value, list) else [value]:
            pid = reference_id(item, "Patient")
            if pid:
                return pid
    return None


def source_of(resource: dict[str, Any]) -> str | None:
    """The source system id from ``meta.source`` (``https://usmis.kz/source/{id}``)."""
    meta = resource.get("meta")
    src = meta.get("source") if isinstance(meta, dict) else None
    prefix = "https://usmis.kz/source/"
    if isinstance(src, str) and src.startswith(prefix):
        return src[len(prefix) :].split("#")[0][:64] or None
    return None


def walk_references(node: Any) -> Iterator[dict[str, Any]]:
    """Every object with a string ``reference`` inside ``node`` (deep)."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            if isinstance(value, dict | list):
                yield from walk_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_references(item)


def rewrite_references(node: Any, mapping: Callable[[str], str | None]) -> None:
    """Replace each ``reference`` for which ``mapping`` returns a new value (in place)."""
    for ref in walk_references(node):
        new = mapping(ref["reference"])
        if new is not None:
            ref["reference"] = new


def operation_outcome(
    severity: str, code: str, message: str, expressions: list[str] | None = None
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if expressions:
        issue["expression"] = expressions
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_of_error(err: UsmisError) -> dict[str, Any]:
    issues = getattr(err, "issues", None)
    if issues:
        return {"resourceType": "OperationOutcome", "issue": issues}
    return operation_outcome("error", err.code, err.message, err.expression)


def information(message: str) -> dict[str, Any]:
    return operation_outcome("information", "informational", message)
