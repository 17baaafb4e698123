"""The access policy as pure decisions: who may do what to which row, and why not.

No database, no FastAPI: the facts a decision needs (is there a care relationship, an
emergency grant, a consent denial, is the principal blocked) are gathered by
``access/context.py`` and handed in.  The same rules exist a second time as SQL
predicates for searches (``repository.visibility_predicate``); the table-driven tests
check that both agree through the real API.

Rules (issue 6):

- SMART scopes narrow everything: no scope for (type, interaction) → deny.
- patient: own record only (the compartments of the Patients linked to their person);
  may write Consent about themselves; never export.
- clinician: non-compartment resources (Organization, Practitioner, …) freely; patient
  data when the organization authored it, or with a care relationship (attachment, recent
  encounter, active referral), or under an emergency (break-the-glass) grant; consent
  denials (a category, or the clinician's organization) hide data from everyone except
  the authoring organization and the patient.  Break-the-glass does not override consent:
  the patient's explicit refusal wins (decision; docs/access.md).
- registrar: identity resources (Patient, Person, RelatedPerson) and non-compartment ones.
- investigator: financial resources (Claim, ClaimResponse, ExplanationOfBenefit, Coverage,
  Patient) under consent; export with a declared purpose.
- auditor: Consent, AuditEvent and non-compartment resources; no clinical data.
- admin: everything (operators; audited); export only with a declared purpose.
- source: writes only as itself, reads only what it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from usmis.access.model import Principal, Role, interaction_of

IDENTITY_TYPES = frozenset({"Patient", "Person", "RelatedPerson"})
FINANCIAL_TYPES = frozenset(
    {"Claim", "ClaimResponse", "ExplanationOfBenefit", "Coverage", "Patient", "Account",
     "Invoice", "PaymentReconciliation"}
)
AUDITOR_TYPES = frozenset({"Consent", "AuditEvent", "Provenance"})
READ_ACTIONS = frozenset(
    {"read", "vread", "history", "history-instance", "history-type", "history-system",
     "search", "search-type", "everything", "include"}
)
WRITE_ACTIONS = frozenset({"create", "update", "patch", "delete"})
EXPORT_ROLES = frozenset({Role.INVESTIGATOR, Role.ADMIN})
# Roles whose distinct-patient reads per hour are limited (the exfiltration guard).
GUARDED_ROLES = frozenset({Role.CLINICIAN, Role.REGISTRAR, Role.INVESTIGATOR, Role.AUDITOR})


class RowLike(Protocol):
    @property
    def patient_id(self) -> str | None: ...
    @property
    def source_id(self) -> str | None: ...
    @property
    def author_org(self) -> str | None: ...
    @property
    def sensitivity(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Facts:
    """What the context found out about the row's patient for this principal."""

    own_patients: frozenset[str] = frozenset()  # role patient: linked Patients of their person
    in_care: bool = False
    emergency: bool = False
    denied_categories: frozenset[str] = frozenset()
    denied_orgs: frozenset[str] = frozenset()
    persons: frozenset[str] = frozenset()  # opaque person keys (for the audit entry)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str  # stable code (audit, OperationOutcome details)
    message: str = ""
    emergency: bool = False


ALLOW = Decision(True, "allowed")


def deny(reason: str, message: str) -> Decision:
    return Decision(False, reason, message)


def decide_type(principal: Principal, action: str, resource_type: str) -> Decision:
    """May the principal attempt ``action`` on ``resource_type`` at all?"""
    letter = interaction_of(action)
    if not principal.allows(resource_type, letter):
        return deny("scope", f"the token's scopes do not permit '{letter}' on {resource_type}")
    role = principal.role
    if action == "export":
        if role not in EXPORT_ROLES:
            return deny("export-role", f"role {role.value} may not export in bulk")
        if not principal.purpose_of_use:
            return deny("export-purpose", "bulk export needs a declared purpose of use")
        return ALLOW
    if action in WRITE_ACTIONS:
        if role is Role.PATIENT and resource_type != "Consent":
            return deny("role", "a patient may only write their own Consent")
        if role in (Role.INVESTIGATOR, Role.AUDITOR):
            return deny("role", f"role {role.value} is read-only")
        if role is Role.REGISTRAR and resource_type not in IDENTITY_TYPES:
            return deny("role", "a registrar writes identity resources only")
        if role is Role.CLINICIAN and action == "delete" and resource_type in IDENTITY_TYPES:
            return deny("role", "clinicians do not delete identities")
        return ALLOW
    return ALLOW


def decide_row(
    principal: Principal, action: str, resource_type: str, row: RowLike, facts: Facts
) -> Decision:
    """May the principal do ``action`` on this stored (or about to be stored) row?"""
    first = decide_type(principal, action, resource_type)
    if not first.allowed:
        return first
    role = principal.role
    patient = row.patient_id
    if role is Role.ADMIN:
        return ALLOW
    if role is Role.SOURCE:
        if row.source_id != principal.source_id:
            verb = "write" if action in WRITE_ACTIONS else "read"
            return deny("source", f"a source system may {verb} only what it sent")
        return ALLOW
    if role is Role.PATIENT:
        if patient is None:
            return ALLOW if action in READ_ACTIONS else deny("role", "not the patient's record")
        if patient in facts.own_patients:
            return ALLOW
        return deny("not-own-record", "a patient may access only their own record")
    if patient is None:
        if action in WRITE_ACTIONS and role is not Role.CLINICIAN:
            return ALLOW if role is Role.REGISTRAR else deny("role", "read-only role")
        return ALLOW
    if role is Role.REGISTRAR:
        if resource_type in IDENTITY_TYPES:
            return ALLOW
        return deny("role", "a registrar sees identity resources, not clinical data")
    if role is Role.AUDITOR:
        if resource_type in AUDITOR_TYPES:
            return ALLOW
        return deny("role", "an auditor sees consents and the audit log, not clinical data")
    if role is Role.INVESTIGATOR:
        if resource_type not in FINANCIAL_TYPES:
            return deny("role", "an investigator sees financial resources only")
        return _consent(row, principal, facts) or ALLOW
    # clinician
    org = principal.organization_id
    own = row.author_org is not None and row.author_org == org
    if action in WRITE_ACTIONS:
        if not own and (action == "delete" or row.author_org is not None):
            return deny("author", "only the authoring organization may change or delete it")
        if action == "delete":
            return ALLOW
        # Writing into a record needs care (or an emergency) even for one's own rows, so
        # that a clinician cannot create a care relationship out of nothing.
        if not facts.in_care and not facts.emergency:
            return deny("no-care-relationship",
                        f"organization {org} has no care relationship with this patient")
        return Decision(True, "care" if facts.in_care else "emergency",
                        emergency=not facts.in_care)
    if own:
        return ALLOW
    if not facts.in_care and not facts.emergency:
        return deny(
            "no-care-relationship",
            f"organization {org} has no care relationship with this patient (attachment, "
            "recent encounter or active referral); declare an emergency to break the glass",
        )
    blocked = _consent(row, principal, facts)
    if blocked:
        return blocked
    return Decision(True, "emergency" if not facts.in_care else "care",
                    emergency=not facts.in_care)


def _consent(row: RowLike, principal: Principal, facts: Facts) -> Decision | None:
    if row.sensitivity and row.sensitivity in facts.denied_categories:
        return deny("consent-category",
                    f"the patient's consent denies sharing of category {row.sensitivity}")
    if principal.organization_id and principal.organization_id in facts.denied_orgs:
        return deny("consent-organization",
                    f"the patient's consent denies organization {principal.organization_id}")
    return None
