"""What the policy needs from stored resources, extracted at write time.  Pure.

Care relationships (the decision: they come from ordinary FHIR resources the sources
already send, so no special feed is needed):

- **attachment**: ``Patient.managingOrganization`` and ``Patient.generalPractitioner``
  references to an Organization; an ``EpisodeOfCare`` (status planned/waitlist/active/
  onhold) with ``managingOrganization`` — the polyclinic attachment registry lands as
  EpisodeOfCare (period = attachment period).
- **encounter**: ``Encounter.serviceProvider`` with its period; the policy counts it when
  it started or ended within the last ``care_encounter_days``.
- **referral**: an active/on-hold ``ServiceRequest`` whose ``performer`` names an
  Organization (the referral's destination), valid until ``occurrencePeriod.end`` if any.

Consent (FHIR R4 Consent, status active, scope patient-privacy): every provision of type
``deny`` (top level or nested) with a ``securityLabel`` denies a category; one with an
``actor.reference`` to an Organization denies that organization.  Security labels are the
v3 ActCode sensitivity codes (HIV, ETH/SUD substance, PSY/PSYTHPN mental, SEX
reproductive) or our own ``https://usmis.kz/cs/consent-category`` codes (hiv, substance,
mental, reproductive).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CATEGORY_SYSTEM = "https://usmis.kz/cs/consent-category"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACTCODE_TO_CATEGORY = {
    "HIV": "hiv",
    "ETH": "substance",
    "SUD": "substance",
    "PSY": "mental",
    "PSYTHPN": "mental",
    "SEX": "reproductive",
    "STD": "reproductive",
}
CATEGORY_TO_ACTCODE = {"hiv": "HIV", "substance": "ETH", "mental": "PSY", "reproductive": "SEX"}


@dataclass(frozen=True)
class CareLinkSpec:
    organization_id: str
    kind: str  # attachment | encounter | referral
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class ConsentRuleSpec:
    kind: str  # deny-category | deny-org
    value: str


def ref_id(ref: Any, rtype: str) -> str | None:
    """``Organization/123`` → ``123`` (local references only)."""
    if not isinstance(ref, dict):
        return None
    text = ref.get("reference")
    if not isinstance(text, str):
        return None
    parts = text.split("/")
    if len(parts) >= 2 and parts[-2] == rtype and parts[-1]:
        return parts[-1]
    if len(parts) >= 4 and parts[-4] == rtype and parts[-2] == "_history":
        return parts[-3]
    return None


BIN_SYSTEM = "https://usmis.kz/sid/bin"


def org_keys(ref: Any) -> list[str]:
    """The keys an Organization reference names: its logical id and/or its BIN.

    Sources reference organizations by BIN (logical reference, docs/CONTRACTS.md), the API
    by ``Organization/id``; a principal's ``org`` claim matches either form, so both are
    kept.  (Decision: no lookup of BIN ↔ id at write time — references must stay cheap.)
    """
    keys: list[str] = []
    rid = ref_id(ref, "Organization")
    if rid:
        keys.append(rid)
    if isinstance(ref, dict):
        ident = ref.get("identifier")
        if (
            isinstance(ident, dict)
            and ident.get("system") == BIN_SYSTEM
            and isinstance(ident.get("value"), str)
            and ident["value"]
        ):
            keys.append(ident["value"])
    return keys


def parse_instant(value: Any) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware UTC datetime (partial dates: their start)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def _period(period: Any) -> tuple[datetime | None, datetime | None]:
    if not isinstance(period, dict):
        return None, None
    return parse_instant(period.get("start")), parse_instant(period.get("end"))


def care_links(resource_type: str, resource: dict[str, Any]) -> list[CareLinkSpec]:
    out: list[CareLinkSpec] = []
    if resource_type == "Patient":
        if resource.get("active") is False:
            return []
        refs = [resource.get("managingOrganization")] + list(
            resource.get("generalPractitioner") or []
        )
        for ref in refs:
            for org in org_keys(ref):
                out.append(CareLinkSpec(org, "attachment", None, None))
    elif resource_type == "EpisodeOfCare":
        if resource.get("status") in ("planned", "waitlist", "active", "onhold"):
            start, end = _period(resource.get("period"))
            for org in org_keys(resource.get("managingOrganization")):
                out.append(CareLinkSpec(org, "attachment", start, end))
    elif resource_type == "Encounter":
        if resource.get("status") not in ("cancelled", "entered-in-error"):
            start, end = _period(resource.get("period"))
            for org in org_keys(resource.get("serviceProvider")):
                out.append(CareLinkSpec(org, "encounter", start, end or start))
    elif resource_type == "ServiceRequest":
        if resource.get("status") in ("active", "on-hold"):
            start, end = _period(resource.get("occurrencePeriod"))
            start = start or parse_instant(resource.get("authoredOn"))
            for ref in resource.get("performer") or []:
                for org in org_keys(ref):
                    out.append(CareLinkSpec(org, "referral", start, end))
    return out


def _labels(provision: dict[str, Any]) -> list[str]:
    cats: list[str] = []
    for label in provision.get("securityLabel") or []:
        if not isinstance(label, dict):
            continue
        system, code = label.get("system"), label.get("code")
        if system == CATEGORY_SYSTEM and isinstance(code, str):
            cats.append(code)
        elif system == ACTCODE and code in ACTCODE_TO_CATEGORY:
            cats.append(ACTCODE_TO_CATEGORY[str(code)])
    return cats


def _provisions(provision: Any) -> list[dict[str, Any]]:
    if not isinstance(provision, dict):
        return []
    out = [provision]
    for child in provision.get("provision") or []:
        out.extend(_provisions(child))
    return out


def consent_rules(resource: dict[str, Any]) -> list[ConsentRuleSpec]:
    """Deny rules of an active Consent (anything else yields none)."""
    if resource.get("resourceType") != "Consent" or resource.get("status") != "active":
        return []
    rules: set[ConsentRuleSpec] = set()
    for prov in _provisions(resource.get("provision")):
        if prov.get("type") != "deny":
            continue
        for cat in _labels(prov):
            rules.add(ConsentRuleSpec("deny-category", cat))
        for actor in prov.get("actor") or []:
            ref = actor.get("reference") if isinstance(actor, dict) else None
            for org in org_keys(ref):
                rules.add(ConsentRuleSpec("deny-org", org))
    return sorted(rules, key=lambda r: (r.kind, r.value))


def consent_resource(
    patient_id: str, *, deny_categories: list[str], deny_orgs: list[str]
) -> dict[str, Any]:
    """A FHIR R4 Consent expressing the patient's denials (the portal's shape)."""
    provisions: list[dict[str, Any]] = [
        {
            "type": "deny",
            "securityLabel": [
                {"system": ACTCODE, "code": CATEGORY_TO_ACTCODE.get(c, c)},
                {"system": CATEGORY_SYSTEM, "code": c},
            ],
        }
        for c in deny_categories
    ] + [
        {"type": "deny", "actor": [{
            "role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "IRCP"}]},
            "reference": {"reference": f"Organization/{o}"},
        }]}
        for o in deny_orgs
    ]
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": datetime.now(UTC).isoformat(timespec="seconds"),
        "policyRule": {"coding": [{"system": ACTCODE, "code": "OPTOUT"}]},
        "provision": {"type": "permit", "provision": provisions},
    }
