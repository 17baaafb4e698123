"""One error hierarchy for the whole system.

    UsmisError (500, "internal")
    ├── BadRequest (400, "invalid")            malformed input; FHIR: an OperationOutcome
    │   └── Unprocessable (422, "processing")  well-formed but violates a rule
    ├── Unauthorized (401, "login")
    ├── Forbidden (403, "forbidden")           the access policy said no
    ├── NotFound (404, "not-found")
    ├── Conflict (409, "conflict")
    ├── Gone (410, "deleted")
    └── PreconditionFailed (412, "conflict")   If-Match / conditional ops

``code`` is the FHIR IssueType code; ``expression`` names the element (FHIRPath) when known.
Messages never carry personal data: name the element, not its value.
"""

from __future__ import annotations


class UsmisError(Exception):
    status = 500
    code = "exception"

    def __init__(self, message: str, *, expression: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression or []


class BadRequest(UsmisError):
    status = 400
    code = "invalid"


class Unprocessable(BadRequest):
    status = 422
    code = "processing"


class Unauthorized(UsmisError):
    status = 401
    code = "login"


class Forbidden(UsmisError):
    status = 403
    code = "forbidden"


class NotFound(UsmisError):
    status = 404
    code = "not-found"


class Conflict(UsmisError):
    status = 409
    code = "conflict"


class Gone(UsmisError):
    status = 410
    code = "deleted"


class PreconditionFailed(UsmisError):
    status = 412
    code = "conflict"


class ServiceUnavailable(UsmisError):
    status = 503
    code = "transient"
