"""Who is asking: roles, principals and SMART v2 scopes.  Pure (no FastAPI, no SQLAlchemy).

A :class:`Principal` is what a verified bearer token says about its holder.  The policy
(``access/policy.py``) decides from it; the audit log records it.  Scopes only ever
*narrow* what the role allows: a clinician token with ``user/Observation.rs`` may read
observations of patients in its care, never more.

SMART App Launch v2 scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):
``<context>/<type|*>.<cruds>`` with context patient|user|system.  v1 suffixes ``read``,
``write`` and ``*`` are accepted and translated (read = rs, write = cud, * = cruds).
Fine-grained query suffixes (``?category=…``) are parsed off and ignored: they never widen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Role(enum.StrEnum):
    PATIENT = "patient"
    CLINICIAN = "clinician"
    REGISTRAR = "registrar"
    INVESTIGATOR = "investigator"
    AUDITOR = "auditor"
    ADMIN = "admin"
    SOURCE = "source"


# HL7 v3 PurposeOfUse codes (http://terminology.hl7.org/CodeSystem/v3-ActReason) we use.
PURPOSE_TREATMENT = "TREAT"
PURPOSE_EMERGENCY = "ETREAT"
PURPOSE_OPERATIONS = "HOPERAT"
PURPOSE_OVERSIGHT = "HMARKT"  # oversight/fraud investigation; closest v3 code is HOPERAT/FRAUD
PURPOSE_FRAUD = "FRAUD"
PURPOSE_RESEARCH = "HRESCH"
PURPOSE_PUBLIC_HEALTH = "PUBHLTH"
PURPOSE_AUDIT = "HSYSADMIN"
PURPOSE_PATIENT = "PATRQT"  # patient requested (own record)

DEFAULT_PURPOSE: dict[Role, str] = {
    Role.PATIENT: PURPOSE_PATIENT,
    Role.CLINICIAN: PURPOSE_TREATMENT,
    Role.REGISTRAR: PURPOSE_OPERATIONS,
    Role.INVESTIGATOR: PURPOSE_FRAUD,
    Role.AUDITOR: PURPOSE_AUDIT,
    Role.ADMIN: PURPOSE_AUDIT,
    Role.SOURCE: PURPOSE_OPERATIONS,
}

# What a token of each role gets when it asks for no scope.
DEFAULT_SCOPES: dict[Role, str] = {
    Role.PATIENT: "patient/*.rs patient/Consent.cu",
    Role.CLINICIAN: "user/*.rs",
    Role.REGISTRAR: "user/*.rs",
    Role.INVESTIGATOR: "user/*.rs",
    Role.AUDITOR: "user/AuditEvent.rs user/Consent.rs",
    Role.ADMIN: "system/*.cruds",
    Role.SOURCE: "system/*.cruds",
}

INTERACTIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


class ScopeError(ValueError):
    """A scope string that is not a SMART v1/v2 resource scope."""


@dataclass(frozen=True, slots=True)
class Scope:
    context: str  # patient | user | system
    resource_type: str  # a FHIR type or "*"
    interactions: frozenset[str]  # subset of c r u d s

    @classmethod
    def parse(cls, text: str) -> Scope:
        body = text.split("?", 1)[0]
        try:
            context, rest = body.split("/", 1)
            rtype, perms = rest.rsplit(".", 1)
        except ValueError:
            raise ScopeError("scope is not <context>/<type>.<permissions>") from None
        if context not in ("patient", "user", "system"):
            raise ScopeError("scope context must be patient, user or system")
        if not rtype or not (rtype == "*" or rtype.isalnum()):
            raise ScopeError("scope resource type is invalid")
        perms = _V1.get(perms, perms)
        if not perms or any(p not in INTERACTIONS for p in perms):
            raise ScopeError("scope permissions must be a subset of cruds")
        # SMART v2: permissions must be in c-r-u-d-s order; we accept any order (lenient).
        return cls(context, rtype, frozenset(perms))

    def __str__(self) -> str:
        perms = "".join(p for p in INTERACTIONS if p in self.interactions)
        return f"{self.context}/{self.resource_type}.{perms}"


# Non-resource scopes a token may carry; kept but never grant data access.
_NON_RESOURCE = {"openid", "fhirUser", "profile", "offline_access", "online_access", "launch"}


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """Parse a space-separated scope string; unknown non-resource scopes are ignored."""
    out: list[Scope] = []
    for item in text.split():
        if item in _NON_RESOURCE or item.startswith("launch/"):
            continue
        out.append(Scope.parse(item))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified holder of a token.  Its repr carries opaque ids only."""

    subject: str
    role: Role
    organization_id: str | None = None
    speciality: str | None = None
    scopes: tuple[Scope, ...] = ()
    patient_id: str | None = None  # role patient: the patient's own Patient id
    source_id: str | None = None  # role source: the source system it is
    purpose_of_use: str | None = None
    token_id: str | None = None
    expires_at: datetime | None = field(default=None, compare=False)
    issuer: str | None = None

    @property
    def purpose(self) -> str:
        return self.purpose_of_use or DEFAULT_PURPOSE[self.role]

    def scope_string(self) -> str:
        return " ".join(str(s) for s in self.scopes)

    def allows(self, resource_type: str, interaction: str) -> bool:
        """True when some scope grants ``interaction`` (one of cruds) on ``resource_type``."""
        return any(
            interaction in s.interactions and s.resource_type in ("*", resource_type)
            for s in self.scopes
        )


def interaction_of(action: str) -> str:
    """Map a FHIR interaction/action name to its SMART permission letter."""
    return _ACTION_TO_PERMISSION.get(action, "r")


_ACTION_TO_PERMISSION = {
    "read": "r",
    "vread": "r",
    "history": "r",
    "history-instance": "r",
    "everything": "r",
    "search": "s",
    "search-type": "s",
    "history-type": "s",
    "history-system": "s",
    "include": "s",
    "export": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}
