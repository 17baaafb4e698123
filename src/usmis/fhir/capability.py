"""The CapabilityStatement (GET /fhir/metadata): exactly what this server implements."""

from __future__ import annotations

from functools import cache
from typing import Any

from usmis.fhir import indexing
from usmis.fhir.model import CORE_TYPES, READ_ONLY_TYPES
from usmis.fhir.validation import resource_classes

_RW = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type",
       "create", "search-type"]
_COMMON_SEARCH = [
    {"name": "_id", "type": "token"},
    {"name": "_lastUpdated", "type": "date"},
    {"name": "_tag", "type": "token"},
    {"name": "_security", "type": "token"},
    {"name": "_profile", "type": "uri"},
    {"name": "_source", "type": "uri"},
]
# The audit log (usmis.audit.endpoints) serves read and search by these (SEARCH_PARAMS
# there; a test holds the two lists equal); its entries have no versions or history.
_AUDIT_SEARCH = [
    {"name": "patient", "type": "reference"},
    {"name": "agent", "type": "string"},
    {"name": "subtype", "type": "token"},
    {"name": "date", "type": "date"},
    {"name": "emergency", "type": "token"},
]
_AUDIT = {
    "type": "AuditEvent",
    "versioning": "no-version",
    "readHistory": False,
    "updateCreate": False,
    "conditionalCreate": False,
    "conditionalUpdate": False,
    "conditionalDelete": "not-supported",
    "interaction": [{"code": "read"}, {"code": "search-type"}],
    "searchParam": _AUDIT_SEARCH,
    "documentation": "the tamper-evident audit log, read-only: auditors, and patients "
                     "about themselves",
}


@cache
def _resources() -> list[dict[str, Any]]:
    out = []
    for rtype in sorted(resource_classes()):
        if rtype in READ_ONLY_TYPES:
            assert rtype == "AuditEvent"
            out.append(_AUDIT)
            continue
        params = indexing.searchable_params(rtype)
        search = [
            {"name": name, "type": getattr(p, "type", None) or getattr(p, "ptype", "string")}
            for name, p in sorted(params.items())
            if not name.startswith("_")
        ]
        refs = [x["name"] for x in search if x["type"] == "reference"]
        entry: dict[str, Any] = {
            "type": rtype,
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "interaction": [{"code": c} for c in _RW],
            "searchParam": _COMMON_SEARCH + search,
            "searchInclude": ["*", *(f"{rtype}:{r}" for r in refs)],
            "searchRevInclude": ["*"],
        }
        if rtype in CORE_TYPES:
            entry["documentation"] = "full support: R4 search parameters of this type"
        if rtype == "Patient":
            entry["operation"] = [
                {"name": "everything",
                 "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
            ]
        out.append(entry)
    return out


def capability_statement(base_url: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-27",
        "kind": "instance",
        "software": {"name": "USMIS", "version": "0.1.0"},
        "implementation": {"description": "USMIS FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "service": [
                        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                     "restful-security-service", "code": "SMART-on-FHIR"}]}
                    ],
                    "description": "OAuth2 bearer tokens (JWT) required on every endpoint "
                    "except /metadata",
                },
                "resource": _resources(),
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "operation": [
                    {"name": "validate",
                     "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
                ],
            }
        ],
    }
