"""What the access domain does: users, clients, tokens for them.

Services never commit: the caller (CLI command, HTTP request) owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from sqlalchemy import Connection, RowMapping

from usmis.access import repository as repo
from usmis.access.model import DEFAULT_SCOPES, Principal, Role, Scope, parse_scopes
from usmis.access.secrets import (
    check_client_secret,
    check_password,
    hash_client_secret,
    hash_password,
    new_client_secret,
)
from usmis.access.tokens import issue_token, principal_from_claims
from usmis.config import Settings
from usmis.kit.crypto import keyring_for
from usmis.kit.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    principal: Principal


def add_user(
    conn: Connection,
    *,
    username: str,
    role: Role | str,
    org: str | None = None,
    speciality: str | None = None,
    patient: str | None = None,
    source: str | None = None,
    scope: str | None = None,
    password: str | None = None,
) -> None:
    role = Role(role)
    scope = scope or DEFAULT_SCOPES[role]
    parse_scopes(scope)
    if role is Role.CLINICIAN and not org:
        raise BadRequest("a clinician needs an organization", expression=["org"])
    if role is Role.PATIENT and not patient:
        raise BadRequest("a patient user needs their Patient id", expression=["patient"])
    if role is Role.SOURCE and not source:
        raise BadRequest("a source-system user needs a source id", expression=["source"])
    if repo.get_user(conn, username) is not None:
        raise Conflict("user already exists", expression=["username"])
    repo.insert_user(
        conn,
        {
            "username": username,
            "role": role.value,
            "organization_id": org,
            "speciality": speciality,
            "patient_id": patient,
            "source_id": source,
            "scope": scope,
            "password_hash": hash_password(password) if password else None,
            "active": True,
            "created_at": datetime.now(UTC),
        },
    )


def add_client(
    conn: Connection,
    *,
    client_id: str,
    source: str,
    org: str | None = None,
    scope: str | None = None,
) -> str:
    """Register a source system as an OAuth2 client; returns its secret (shown once)."""
    scope = scope or DEFAULT_SCOPES[Role.SOURCE]
    parse_scopes(scope)
    if repo.get_client(conn, client_id) is not None:
        raise Conflict("client already exists", expression=["client_id"])
    secret = new_client_secret()
    repo.insert_client(
        conn,
        {
            "client_id": client_id,
            "secret_hash": hash_client_secret(secret),
            "role": Role.SOURCE.value,
            "source_id": source,
            "organization_id": org,
            "scope": scope,
            "active": True,
            "created_at": datetime.now(UTC),
        },
    )
    return secret


def narrow_scope(granted: str, requested: str | None) -> str:
    """The requested scopes that the granted ones cover (OAuth2: a client may ask for less)."""
    if not requested:
        return granted
    allowed = parse_scopes(granted)
    keep: list[str] = []
    for s in parse_scopes(requested):
        if any(_covers(a, s) for a in allowed):
            keep.append(str(s))
    if not keep:
        raise Unauthorized("requested scope exceeds the granted scope")
    return " ".join(keep)


def _covers(a: Scope, b: Scope) -> bool:
    return (
        a.context == b.context
        and a.resource_type in ("*", b.resource_type)
        and b.interactions <= a.interactions
    )


def token_for_user(
    conn: Connection,
    settings: Settings,
    username: str,
    *,
    password: str | None = None,
    check: bool = True,
    scope: str | None = None,
    purpose: str | None = None,
    ttl_seconds: int | None = None,
) -> IssuedToken:
    """A token for a registered user (``check`` False: local CLI, no password asked)."""
    row = repo.get_user(conn, username)
    if row is None or not row["active"] or (check and not check_password(password or "",
                                                                         row["password_hash"])):
        raise Unauthorized("unknown user or wrong password")
    return _issue(
        settings,
        subject=username,
        role=row["role"],
        org=row["organization_id"],
        speciality=row["speciality"],
        patient=row["patient_id"],
        source=row["source_id"],
        scope=narrow_scope(row["scope"], scope),
        purpose=purpose,
        ttl_seconds=ttl_seconds,
    )


def token_for_client(
    conn: Connection,
    settings: Settings,
    client_id: str,
    secret: str,
    *,
    scope: str | None = None,
) -> IssuedToken:
    """OAuth2 client_credentials: a source system authenticates as itself."""
    row = repo.get_client(conn, client_id)
    if row is None or not row["active"] or not check_client_secret(secret, row["secret_hash"]):
        raise Unauthorized("unknown client or wrong secret")
    return _issue(
        settings,
        subject=f"client:{client_id}",
        role=row["role"],
        org=row["organization_id"],
        source=row["source_id"],
        scope=narrow_scope(row["scope"], scope),
    )


def _issue(
    settings: Settings,
    *,
    subject: str,
    role: str,
    org: str | None = None,
    speciality: str | None = None,
    patient: str | None = None,
    source: str | None = None,
    scope: str | None = None,
    purpose: str | None = None,
    ttl_seconds: int | None = None,
) -> IssuedToken:
    ttl = ttl_seconds if ttl_seconds is not None else settings.token_ttl_seconds
    token = issue_token(
        settings,
        subject=subject,
        role=role,
        org=org,
        speciality=speciality,
        patient=patient,
        source=source,
        scope=scope,
        purpose=purpose,
        ttl_seconds=ttl,
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    principal = principal_from_claims(claims)
    return IssuedToken(token, ttl, principal.scope_string(), principal)


def record_login(
    conn: Connection, settings: Settings, principal: Principal, *, outcome: str
) -> None:
    """Audit a token issuance (the embedded issuer's "login"), in the caller's transaction."""
    from usmis.audit import service as audit

    audit.record_login(conn, settings, principal, outcome=outcome)


# --- break-the-glass ------------------------------------------------------------------
@dataclass(frozen=True)
class EmergencyGrant:
    id: str
    patient_id: str
    expires_at: datetime


def declare_emergency(
    conn: Connection, settings: Settings, principal: Principal, patient_id: str, reason: str
) -> EmergencyGrant:
    """Break the glass: a time-limited grant for one patient, flagged for review.

    Recorded in the audit log (emergency, visible to the patient), put in the auditor's
    review queue (unreviewed grants) and raised as an alert.
    """
    import secrets
    from datetime import timedelta

    from usmis.audit import service as audit
    from usmis.audit.model import AuditRecord

    if principal.role is not Role.CLINICIAN:
        raise Forbidden("only clinicians may declare an emergency")
    reason = reason.strip()
    if len(reason) < 10:
        raise BadRequest("an emergency needs a reason of at least 10 characters",
                         expression=["reason"])
    if not repo.patient_exists(conn, patient_id):
        raise NotFound("the patient is not known", expression=["patient"])
    now = datetime.now(UTC)
    grant = EmergencyGrant(
        secrets.token_hex(16), patient_id,
        now + timedelta(minutes=settings.emergency_access_minutes),
    )
    sealed = keyring_for(settings.resolved_key_file).seal(
        reason[:2000].encode(), f"emergency/{grant.id}".encode()
    )
    repo.insert_grant(conn, {
        "id": grant.id, "subject": principal.subject, "organization_id": principal.organization_id,
        "patient_id": patient_id, "kek_id": sealed.kek_id, "dek": sealed.dek,
        "reason": sealed.ciphertext, "granted_at": now, "expires_at": grant.expires_at,
    })
    repo.insert_alert(conn, {
        "kind": "break-glass", "subject": principal.subject,
        "organization_id": principal.organization_id,
        "detail": f"emergency access grant {grant.id}", "created_at": now,
    })
    audit.append(conn, settings, AuditRecord(
        action="break-glass", subject=principal.subject, role=principal.role.value,
        organization_id=principal.organization_id, purpose="ETREAT", emergency=True,
        resource_type="Patient", entities=(f"Patient/{patient_id}",),
        patients=tuple(repo.linked_patient_ids(conn, [patient_id])),
        persons=tuple(repo.person_keys(conn, [patient_id])),
        detail=json.dumps({"grant": grant.id, "expires": grant.expires_at.isoformat()}),
    ))
    return grant


def grant_reason(settings: Settings, row: Mapping[str, Any] | RowMapping) -> str:
    """The clinician's stated reason of an emergency grant (opened for auditor / patient)."""
    return keyring_for(settings.resolved_key_file).open(
        row["kek_id"], row["dek"], row["reason"], f"emergency/{row['id']}".encode()
    ).decode()


def review_emergency(
    conn: Connection, settings: Settings, auditor: Principal, grant_id: str, outcome: str
) -> None:
    from usmis.audit import service as audit
    from usmis.audit.model import AuditRecord

    if auditor.role is not Role.AUDITOR:
        raise Forbidden("only auditors review emergency access")
    if outcome not in ("justified", "unjustified"):
        raise BadRequest("outcome must be justified or unjustified", expression=["outcome"])
    row = repo.get_grant(conn, grant_id)
    if row is None:
        raise NotFound("no such emergency grant", expression=["grant"])
    if row["reviewed_at"] is not None:
        raise Conflict("this emergency grant was already reviewed")
    now = datetime.now(UTC)
    repo.review_grant(conn, grant_id, reviewer=auditor.subject, outcome=outcome, at=now)
    audit.append(conn, settings, AuditRecord(
        action="review", subject=auditor.subject, role=auditor.role.value,
        organization_id=auditor.organization_id, purpose=auditor.purpose,
        patients=(row["patient_id"],),
        detail=json.dumps({"grant": grant_id, "outcome": outcome}),
    ))


def clear_block(conn: Connection, settings: Settings, auditor: Principal, subject: str) -> None:
    from usmis.audit import service as audit
    from usmis.audit.model import AuditRecord

    if auditor.role is not Role.AUDITOR:
        raise Forbidden("only auditors lift a block")
    if not repo.clear_block(conn, subject, auditor.subject, datetime.now(UTC)):
        raise NotFound("this principal is not blocked", expression=["subject"])
    audit.append(conn, settings, AuditRecord(
        action="unblock", subject=auditor.subject, role=auditor.role.value,
        purpose=auditor.purpose, detail=json.dumps({"unblocked": subject}),
    ))
