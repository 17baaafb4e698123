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
    if resource_type == "Patient":
        patient_id = resource_id
    if resource_type == "Consent":
        rules = consent_rules(resource) if resource is not None and patient_id else []
        repo.replace_consent_rules(conn, resource_id, [
            {"patient_id": patient_id, "consent_id": resource_id, "kind": r.kind,
             "value": r.value}
            for r in rules
        ], new=new)
        return
    links = care_links(resource_type, resource) if resource is not None and patient_id else []
    repo.replace_care_links(conn, resource_type, resource_id, [
        {"patient_id": patient_id, "organization_id": link.organization_id, "kind": link.kind,
         "resource_type": resource_type, "resource_id": resource_id, "start": link.start,
         "end": link.end}
        for link in links
    ], new=new)
