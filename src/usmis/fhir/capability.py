"""The CapabilityStatement (GET /fhir/metadata): exactly what this server implements."""

from __future__ import annotations

from functools import cache
from typing import Any

from usmis.fhir import indexing
from usmis.fhir.model import CORE_TYPES, READ_ONLY_TYPES
from usmis.fhir.validation import resource_classes

_RW = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type",
       "create", "search-type"]
_RO = ["read", "vread", "history-instance", "history-type", "search-type"]
_COMMON_SEARCH = [
    {"name": "_id", "type": "token"},
    {"name": "_lastUpdated", "type": "date"},
]


@cache
def _resources() -> list[dict[str, Any]]:
    out = []
    for rtype in sorted(resource_classes()):
        params = indexing.searchable_params(rtype)
        search = [
            {"name": name, "type": getattr(p, "type", None) or getattr(p, "ptype", "string")}
            for name, p in sorted(params.items())
            if not name.startswith("_")
        ]
        entry: dict[str, Any] = {
            "type": rtype,
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": rtype not in READ_ONLY_TYPES,
            "conditionalUpdate": rtype not in READ_ONLY_TYPES,
            "conditionalDelete": "single" if rtype not in READ_ONLY_TYPES else "not-supported",
            "interaction": [
                {"code": c} for c in (_RO if rtype in READ_ONLY_TYPES else _RW)
            ],
            "searchParam": _COMMON_SEARCH + search,
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
