"""Audit entries as FHIR R4 AuditEvent, shaped after IHE Basic Audit Log Patterns (BALP).

Pure.  BALP profiles used: RESTful activity (type ``rest`` + restful-interaction subtype),
"PatientRead/PatientQuery/PatientCreate…" (an entity with role Patient when an entry
concerns patients), Login (DICOM 110114 / 110122).  Our own actions (break-glass, policy
denial, review, unblock) carry a code of ``https://usmis.kz/cs/audit-action`` as subtype.
The AuditEvent id is the entry's sequence number (opaque, stable).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import RowMapping

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
USMIS_ACTION = "https://usmis.kz/cs/audit-action"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
AGENT_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
USER_SYSTEM = "https://usmis.kz/sid/user"
ORG_SYSTEM = "https://usmis.kz/sid/organization"

_REST = {
    "read": "read", "vread": "vread", "search": "search-type", "search-type": "search-type",
    "history": "history-instance", "history-instance": "history-instance",
    "history-type": "history-type", "history-system": "history-system", "create": "create",
    "update": "update", "patch": "patch", "delete": "delete", "everything": "operation",
    "export": "operation",
}
_CRUDE = {
    "create": "C", "read": "R", "vread": "R", "history": "R", "history-instance": "R",
    "search": "E", "search-type": "E", "history-type": "E", "history-system": "E",
    "everything": "E", "export": "E", "update": "U", "patch": "U", "delete": "D",
}
_OUTCOME_DESC = {"0": "success", "4": "denied by access policy", "8": "failed", "12": "failed"}


def to_audit_event(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    action = str(row["action"])
    detail = json.loads(row["detail"]) if row.get("detail") else {}
    event: dict[str, Any] = {"resourceType": "AuditEvent", "id": str(row["seq"])}
    if action == "login":
        event["type"] = {"system": DCM, "code": "110114", "display": "User Authentication"}
        event["subtype"] = [{"system": DCM, "code": "110122", "display": "Login"}]
        event["action"] = "E"
    elif action in _REST:
        event["type"] = {"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"}
        event["subtype"] = [{"system": RESTFUL, "code": _REST[action]}]
        if action in ("everything", "export"):
            event["subtype"].append({"system": USMIS_ACTION, "code": action})
        event["action"] = _CRUDE[action]
    else:
        event["type"] = {"system": DCM, "code": "110113", "display": "Security Alert"}
        event["subtype"] = [{"system": USMIS_ACTION, "code": action}]
        event["action"] = "E"
    event["recorded"] = str(row["recorded"]).replace("Z", "+00:00")
    outcome = str(row["outcome"])
    event["outcome"] = outcome
    desc = _OUTCOME_DESC.get(outcome, "")
    if "denied" in detail:
        desc = f"denied: {detail['denied']}"
    if desc:
        event["outcomeDesc"] = desc
    if row.get("purpose"):
        event["purposeOfEvent"] = [{"coding": [{"system": PURPOSE, "code": row["purpose"]}]}]
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": AGENT_TYPE, "code": "humanuser"
                             if row.get("role") not in ("source",) else "datacollector"}]},
        "who": {"identifier": {"system": USER_SYSTEM, "value": row.get("subject") or "unknown"}},
        "requestor": True,
    }
    if row.get("role"):
        agent["role"] = [{"coding": [{"system": "https://usmis.kz/cs/role",
                                      "code": row["role"]}]}]
    if detail.get("jti"):
        agent["policy"] = [f"urn:jti:{detail['jti']}"]
    agents = [agent]
    if row.get("organization_id"):
        agents.append({
            "type": {"coding": [{"system": AGENT_TYPE, "code": "dataprocessor"}]},
            "who": {"reference": f"Organization/{row['organization_id']}"},
            "requestor": False,
        })
    if row.get("source_id"):
        agents.append({
            "type": {"coding": [{"system": AGENT_TYPE, "code": "datacollector"}]},
            "who": {"identifier": {"system": "https://usmis.kz/source",
                                   "value": row["source_id"]}},
            "requestor": False,
        })
    event["agent"] = agents
    event["source"] = {
        "site": "usmis",
        "observer": {"display": "USMIS"},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    entities: list[dict[str, Any]] = []
    for pid in json.loads(row["patients"] or "[]"):
        entities.append({
            "what": {"reference": f"Patient/{pid}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        })
    for ref in json.loads(row["entities"] or "[]"):
        if ref.startswith("Patient/") and any(
            e["what"]["reference"] == ref for e in entities
        ):
            continue
        entities.append({
            "what": {"reference": ref},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        })
    if row.get("query"):
        import base64

        entities.append({
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "query": base64.b64encode(str(row["query"]).encode()).decode(),
        })
    if row.get("emergency"):
        entities.append({
            "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
            "securityLabel": [{"system": USMIS_ACTION, "code": "break-glass",
                               "display": "access under an emergency (break-the-glass) grant"}],
        })
    if entities:
        event["entity"] = entities
    return event
