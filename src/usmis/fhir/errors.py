"""FHIR-specific errors on top of :mod:`usmis.kit.errors` (same hierarchy, same statuses).

    BadRequest (400)
    └── InvalidResource (400)   structural validation failed: one OperationOutcome issue
        │                       per problem, each naming its FHIRPath element
        └── InvalidResult (422) the same, of what a well-formed request would make (a
                                JSON Patch applied): R4 http.html#patch
    MethodNotAllowed (405)      e.g. writing AuditEvent, which only the audit log writes
"""

from __future__ import annotations

from typing import Any

from usmis.fhir.validation import Issue
from usmis.kit.errors import BadRequest, UsmisError


class InvalidResource(BadRequest):
    def __init__(self, issues: list[Issue], *, prefix: str = "") -> None:
        first = issues[0]
        super().__init__(
            f"{len(issues)} validation error(s); first: {first.expression} {first.message}",
            expression=[prefix + i.expression for i in issues],
        )
        self.issues: list[dict[str, Any]] = [
            {
                "severity": "error",
                "code": i.code,
                "diagnostics": f"{prefix}{i.expression}: {i.message}",
                "expression": [prefix + i.expression] if i.expression else [],
            }
            for i in issues
        ]
        for issue in self.issues:
            if not issue["expression"]:
                del issue["expression"]


class InvalidResult(InvalidResource):
    status = 422
    code = "processing"


class MethodNotAllowed(UsmisError):
    status = 405
    code = "not-supported"
