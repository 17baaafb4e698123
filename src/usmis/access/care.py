"""Keep the policy's projections in step with the store: ``on_write``.

STORE calls :func:`on_write` in the same transaction as every create, update and delete
(``resource`` None), so care relationships and consent provisions are never stale.
See :mod:`usmis.access.projection` for which resources count and how.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from usmis.access import repository as repo
from usmis.access.projection import care_links, consent_rules

PROJECTED_TYPES = frozenset({"Patient", "EpisodeOfCare", "Encounter", "ServiceRequest", "Consent"})


def on_create_many(
    conn: Connection, items: list[tuple[str, str, str | None, dict[str, Any]]]
) -> None:
    """The projections of resources just created, (type, id, patient id, resource) each:
    nothing to replace, so one insert per table for them all."""
    links: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for rtype, rid, patient_id, res in items:
        if rtype not in PROJECTED_TYPES:
            continue
        links += _link_rows(rtype, rid, patient_id, res)
        rules += _rule_rows(rtype, rid, patient_id, res)
    repo.insert_care_links(conn, links)
    repo.insert_consent_rules(conn, rules)


def _link_rows(rtype: str, rid: str, patient_id: str | None,
               res: dict[str, Any] | None) -> list[dict[str, Any]]:
    if rtype == "Patient":
        patient_id = rid
    if rtype == "Consent" or res is None or not patient_id:
        return []
    return [{"patient_id": patient_id, "organization_id": link.organization_id,
             "kind": link.kind, "resource_type": rtype, "resource_id": rid,
             "start": link.start, "end": link.end} for link in care_links(rtype, res)]


def _rule_rows(rtype: str, rid: str, patient_id: str | None,
               res: dict[str, Any] | None) -> list[dict[str, Any]]:
    if rtype != "Consent" or res is None or not patient_id:
        return []
    return [{"patient_id": patient_id, "consent_id": rid, "kind": r.kind, "value": r.value}
            for r in consent_rules(res)]


def on_write(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    patient_id: str | None,
    resource: dict[str, Any] | None,
    *,
    new: bool = False,
) -> None:
    """``new``: a resource id just created (nothing projected yet: no delete needed)."""
    if resource_type not in PROJECTED_TYPES:
        return
    if resource_type == "Consent":
        repo.replace_consent_rules(
            conn, resource_id, _rule_rows(resource_type, resource_id, patient_id, resource),
            new=new)
        return
    repo.replace_care_links(
        conn, resource_type, resource_id,
        _link_rows(resource_type, resource_id, patient_id, resource), new=new)
