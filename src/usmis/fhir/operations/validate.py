"""$validate (R4 resource-operation-validate): validation without storing.

Always 200 with an OperationOutcome (errors as issues) when the body is a resource or a
Parameters wrapping one; the operation itself succeeded even if the resource is invalid.
"""

from __future__ import annotations

from typing import Any

from usmis.fhir import model
from usmis.fhir.validation import validate_resource
from usmis.kit.errors import BadRequest, NotFound


def validate_operation(resource_type: str, body: Any, rid: str | None) -> dict[str, Any]:
    from usmis.fhir.validation import is_resource_type

    if not is_resource_type(resource_type):
        raise NotFound(f"unknown resource type {resource_type}", expression=[resource_type])
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        found = [
            p.get("resource")
            for p in body.get("parameter") or []
            if isinstance(p, dict) and p.get("name") == "resource"
        ]
        if not found:
            raise BadRequest("Parameters needs a 'resource' parameter", expression=["Parameters"])
        body = found[0]
    issues = validate_resource(body, resource_type)
    if rid is not None and not issues and isinstance(body, dict) and body.get("id") != rid:
        return model.operation_outcome(
            "error", "invalid", "the resource id must equal the id in the URL",
            [f"{resource_type}.id"],
        )
    if not issues:
        return model.information("the resource is valid FHIR R4 (structure)")
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": i.code,
                "diagnostics": f"{i.expression}: {i.message}",
                **({"expression": [i.expression]} if i.expression else {}),
            }
            for i in issues
        ],
    }
