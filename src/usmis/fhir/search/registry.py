"""The R4 search parameters we index, as a compact hand-written table.

Taken from the FHIR R4 search parameter registry (``search-parameters.json``), limited to
the common parameters of each supported type.  Each line is::

    name  type  path[|path...]  [Target,Target | *]

Types: t token, s string, d date, r reference, q quantity, n number, u uri.  Paths are
dotted JSON keys walked through arrays; ``key[x]`` expands to the choice-type keys usable
for the parameter type; ``telecom[system=phone]`` keeps only elements with that field value.
Reference targets restrict what is indexed (``patient`` = ``subject`` pointing at a Patient).

Privacy: for the person types (Patient, Practitioner, RelatedPerson, Person) the identifying
parameters are *blind*: their values are stored only as keyed HMACs of normalised values.
Every ``identifier`` parameter is blind on every type (an IIN may sit on a Claim or Coverage),
and so is free text that may name a person (``FREE_TEXT``; and a token's display text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

TYPES = {
    "t": "token",
    "s": "string",
    "d": "date",
    "r": "reference",
    "q": "quantity",
    "n": "number",
    "u": "uri",
}

# The index table each parameter type is stored in (blind params always go to token).
TABLE_OF_TYPE = {
    "token": "fhir_idx_token",
    "uri": "fhir_idx_token",
    "string": "fhir_idx_string",
    "date": "fhir_idx_date",
    "reference": "fhir_idx_reference",
    "quantity": "fhir_idx_quantity",
    "number": "fhir_idx_quantity",
}

PERSON_TYPES = frozenset({"Patient", "Practitioner", "RelatedPerson", "Person"})
# Free text of clinical and claim resources may name a person ("pulse of <name>"): these
# string parameters are blind on every type, as names are (whole words, case- and
# accent-insensitive, or :exact).  A token's display text is kept blind too (indexing).
FREE_TEXT = frozenset(
    {"abatement-string", "onset-info", "value-string", "description", "disposition"}
)
# On person types every non-reference parameter is blind except these (allow-list, so a
# parameter added later is private by default).
NOT_IDENTIFYING = frozenset(
    {
        "gender", "active", "deceased", "address-use", "language", "communication",
        "relationship", "_tag", "_security", "_profile", "_source",
    }
)  # fmt: skip

_ADDRESS = """
~address-other s address.line|address.district|address.text
address s address
address-city s address.city
address-country s address.country
address-postalcode s address.postalCode
address-state s address.state
address-use t address.use
"""
_PERSON_NAME = """
~name-other s name.text|name.prefix|name.suffix
email t telecom[system=email]
family s name.family
given s name.given
identifier t identifier
name s name
phone t telecom[system=phone]
phonetic s name
telecom t telecom
"""

_COMMON = """
_tag t meta.tag
_security t meta.security
_profile u meta.profile
_source u meta.source
"""

_SPEC: dict[str, str] = {
    "Patient": _ADDRESS
    + _PERSON_NAME
    + """
active t active
birthdate d birthDate
death-date d deceasedDateTime
deceased t deceasedBoolean
gender t gender
general-practitioner r generalPractitioner Organization,Practitioner,PractitionerRole
language t communication.language
link r link.other Patient,RelatedPerson
organization r managingOrganization Organization
""",
    "Practitioner": _ADDRESS
    + _PERSON_NAME
    + """
active t active
communication t communication
gender t gender
""",
    "RelatedPerson": _ADDRESS
    + _PERSON_NAME
    + """
active t active
birthdate d birthDate
gender t gender
patient r patient Patient
relationship t relationship
""",
    "Person": _ADDRESS
    + _PERSON_NAME
    + """
birthdate d birthDate
gender t gender
link r link.target Patient,Practitioner,RelatedPerson,Person
organization r managingOrganization Organization
patient r link.target Patient
practitioner r link.target Practitioner
relatedperson r link.target RelatedPerson
""",
    "PractitionerRole": """
active t active
date d period
email t telecom[system=email]
endpoint r endpoint Endpoint
identifier t identifier
location r location Location
organization r organization Organization
phone t telecom[system=phone]
practitioner r practitioner Practitioner
role t code
service r healthcareService HealthcareService
specialty t specialty
telecom t telecom
""",
    "Organization": _ADDRESS
    + """
active t active
endpoint r endpoint Endpoint
identifier t identifier
name s name|alias
partof r partOf Organization
phonetic s name
type t type
""",
    "Location": _ADDRESS
    + """
endpoint r endpoint Endpoint
identifier t identifier
name s name|alias
operational-status t operationalStatus
organization r managingOrganization Organization
partof r partOf Location
status t status
type t type
""",
    "Encounter": """
account r account Account
appointment r appointment Appointment
based-on r basedOn ServiceRequest
class t class
date d period
diagnosis r diagnosis.condition Condition,Procedure
episode-of-care r episodeOfCare EpisodeOfCare
identifier t identifier
length q length
location r location.location Location
location-period d location.period
part-of r partOf Encounter
participant r participant.individual Practitioner,PractitionerRole,RelatedPerson
participant-type t participant.type
patient r subject Patient
practitioner r participant.individual Practitioner
reason-code t reasonCode
reason-reference r reasonReference Condition,Observation,Procedure,ImmunizationRecommendation
service-provider r serviceProvider Organization
special-arrangement t hospitalization.specialArrangement
status t status
subject r subject Patient,Group
type t type
""",
    "EpisodeOfCare": """
care-manager r careManager Practitioner
condition r diagnosis.condition Condition
date d period
identifier t identifier
incoming-referral r referralRequest ServiceRequest
organization r managingOrganization Organization
patient r patient Patient
status t status
type t type
""",
    "Condition": """
abatement-age q abatementAge|abatementRange.low
abatement-date d abatementDateTime|abatementPeriod
abatement-string s abatementString
asserter r asserter Practitioner,PractitionerRole,Patient,RelatedPerson
body-site t bodySite
category t category
clinical-status t clinicalStatus
code t code
encounter r encounter Encounter
evidence t evidence.code
evidence-detail r evidence.detail *
identifier t identifier
onset-age q onsetAge|onsetRange.low
onset-date d onsetDateTime|onsetPeriod
onset-info s onsetString
patient r subject Patient
recorded-date d recordedDate
severity t severity
stage t stage.summary
subject r subject Patient,Group
verification-status t verificationStatus
""",
    "Observation": """
based-on r basedOn CarePlan,DeviceRequest,ImmunizationRecommendation,MedicationRequest,NutritionOrder,ServiceRequest
category t category
code t code
combo-code t code|component.code
combo-data-absent-reason t dataAbsentReason|component.dataAbsentReason
combo-value-concept t valueCodeableConcept|component.valueCodeableConcept
combo-value-quantity q valueQuantity|component.valueQuantity
component-code t component.code
component-data-absent-reason t component.dataAbsentReason
component-value-concept t component.valueCodeableConcept
component-value-quantity q component.valueQuantity
data-absent-reason t dataAbsentReason
date d effective[x]
derived-from r derivedFrom *
device r device Device,DeviceMetric
encounter r encounter Encounter
focus r focus *
has-member r hasMember Observation,QuestionnaireResponse,MolecularSequence
identifier t identifier
method t method
part-of r partOf *
patient r subject Patient
performer r performer Practitioner,PractitionerRole,Organization,CareTeam,Patient,RelatedPerson
specimen r specimen Specimen
status t status
subject r subject Patient,Group,Device,Location
value-concept t valueCodeableConcept
value-date d valueDateTime|valuePeriod
value-quantity q valueQuantity
value-string s valueString
""",  # noqa: E501
    "Procedure": """
based-on r basedOn CarePlan,ServiceRequest
category t category
code t code
date d performed[x]
encounter r encounter Encounter
identifier t identifier
instantiates-uri u instantiatesUri
location r location Location
part-of r partOf Procedure,Observation,MedicationAdministration
patient r subject Patient
performer r performer.actor Practitioner,PractitionerRole,Organization,Patient,RelatedPerson,Device
reason-code t reasonCode
reason-reference r reasonReference Condition,Observation,Procedure,DiagnosticReport,DocumentReference
status t status
subject r subject Patient,Group
""",  # noqa: E501
    "DiagnosticReport": """
based-on r basedOn CarePlan,ImmunizationRecommendation,MedicationRequest,NutritionOrder,ServiceRequest
category t category
code t code
conclusion t conclusionCode
date d effective[x]
encounter r encounter Encounter
identifier t identifier
issued d issued
media r media.link Media
patient r subject Patient
performer r performer Practitioner,PractitionerRole,Organization,CareTeam
result r result Observation
results-interpreter r resultsInterpreter Practitioner,PractitionerRole,Organization,CareTeam
specimen r specimen Specimen
status t status
subject r subject Patient,Group,Device,Location
""",  # noqa: E501
    "MedicationRequest": """
authoredon d authoredOn
category t category
code t medicationCodeableConcept
date d dosageInstruction.timing.event
encounter r encounter Encounter
identifier t identifier
intended-dispenser r dispenseRequest.performer Organization
intended-performer r performer Practitioner,PractitionerRole,Organization,Patient,Device,RelatedPerson,CareTeam
intended-performertype t performerType
intent t intent
medication r medicationReference Medication
patient r subject Patient
priority t priority
requester r requester Practitioner,PractitionerRole,Organization,Patient,RelatedPerson,Device
status t status
subject r subject Patient,Group
""",  # noqa: E501
    "MedicationDispense": """
code t medicationCodeableConcept
context r context Encounter,EpisodeOfCare
destination r destination Location
identifier t identifier
medication r medicationReference Medication
patient r subject Patient
performer r performer.actor Practitioner,PractitionerRole,Organization,Patient,Device,RelatedPerson
prescription r authorizingPrescription MedicationRequest
receiver r receiver Patient,Practitioner
responsibleparty r substitution.responsibleParty Practitioner,PractitionerRole
status t status
subject r subject Patient,Group
type t type
whenhandedover d whenHandedOver
whenprepared d whenPrepared
""",
    "Immunization": """
date d occurrence[x]
identifier t identifier
location r location Location
lot-number s lotNumber
manufacturer r manufacturer Organization
patient r patient Patient
performer r performer.actor Practitioner,PractitionerRole,Organization
reaction r reaction.detail Observation
reaction-date d reaction.date
reason-code t reasonCode
reason-reference r reasonReference Condition,Observation,DiagnosticReport
series s protocolApplied.series
status t status
status-reason t statusReason
target-disease t protocolApplied.targetDisease
vaccine-code t vaccineCode
""",
    "AllergyIntolerance": """
asserter r asserter Patient,RelatedPerson,Practitioner,PractitionerRole
category t category
clinical-status t clinicalStatus
code t code|reaction.substance
criticality t criticality
date d recordedDate
identifier t identifier
last-date d lastOccurrence
manifestation t reaction.manifestation
onset d reaction.onset
patient r patient Patient
recorder r recorder Practitioner,PractitionerRole,Patient,RelatedPerson
route t reaction.exposureRoute
severity t reaction.severity
type t type
verification-status t verificationStatus
""",
    "DocumentReference": """
authenticator r authenticator Practitioner,Organization,PractitionerRole
author r author Practitioner,Organization,Device,Patient,RelatedPerson,PractitionerRole
category t category
contenttype t content.attachment.contentType
custodian r custodian Organization
date d date
description s description
encounter r context.encounter Encounter,EpisodeOfCare
event t context.event
facility t context.facilityType
format t content.format
identifier t identifier|masterIdentifier
language t content.attachment.language
location u content.attachment.url
patient r subject Patient
period d context.period
related r context.related *
relatesto r relatesTo.target DocumentReference
relation t relatesTo.code
security-label t securityLabel
setting t context.practiceSetting
status t status
subject r subject Patient,Practitioner,Group,Device
type t type
""",
    "Coverage": """
beneficiary r beneficiary Patient
class-type t class.type
class-value s class.value
dependent s dependent
identifier t identifier
patient r beneficiary Patient
payor r payor Organization,Patient,RelatedPerson
policy-holder r policyHolder Patient,RelatedPerson,Organization
status t status
subscriber r subscriber Patient,RelatedPerson
type t type
""",
    "Claim": """
care-team r careTeam.provider Practitioner,PractitionerRole,Organization
created d created
detail-udi r item.detail.udi Device
encounter r item.encounter Encounter
enterer r enterer Practitioner,PractitionerRole
facility r facility Location
identifier t identifier
insurer r insurer Organization
item-udi r item.udi Device
patient r patient Patient
payee r payee.party Practitioner,PractitionerRole,Organization,Patient,RelatedPerson
priority t priority
procedure-udi r procedure.udi Device
provider r provider Practitioner,PractitionerRole,Organization
status t status
subdetail-udi r item.detail.subDetail.udi Device
use t use
""",
    "ClaimResponse": """
created d created
disposition s disposition
identifier t identifier
insurer r insurer Organization
outcome t outcome
patient r patient Patient
payment-date d payment.date
request r request Claim
requestor r requestor Practitioner,PractitionerRole,Organization
status t status
use t use
""",
    "ExplanationOfBenefit": """
care-team r careTeam.provider Practitioner,PractitionerRole,Organization
claim r claim Claim
coverage r insurance.coverage Coverage
created d created
detail-udi r item.detail.udi Device
disposition s disposition
encounter r item.encounter Encounter
enterer r enterer Practitioner,PractitionerRole
facility r facility Location
identifier t identifier
item-udi r item.udi Device
patient r patient Patient
payee r payee.party Practitioner,PractitionerRole,Organization,Patient,RelatedPerson
procedure-udi r procedure.udi Device
provider r provider Practitioner,PractitionerRole,Organization
status t status
subdetail-udi r item.detail.subDetail.udi Device
""",
    "Consent": """
action t provision.action
actor r provision.actor.reference Device,Group,CareTeam,Organization,Patient,Practitioner,RelatedPerson,PractitionerRole
category t category
consentor r performer Organization,Patient,Practitioner,RelatedPerson,PractitionerRole
data r provision.data.reference *
date d dateTime
identifier t identifier
organization r organization Organization
patient r patient Patient
period d provision.period
purpose t provision.purpose
scope t scope
security-label t provision.securityLabel
source-reference r sourceReference Consent,DocumentReference,Contract,QuestionnaireResponse
status t status
""",  # noqa: E501
    "Provenance": """
agent r agent.who Practitioner,PractitionerRole,RelatedPerson,Patient,Device,Organization
agent-role t agent.role
agent-type t agent.type
entity r entity.what *
location r location Location
patient r target Patient
recorded d recorded
signature-type t signature.type
target r target *
when d occurred[x]
""",
    "AuditEvent": """
action t action
address s agent.network.address
agent r agent.who Practitioner,PractitionerRole,RelatedPerson,Patient,Device,Organization
agent-role t agent.role
altid t agent.altId
date d recorded
entity r entity.what *
entity-role t entity.role
entity-type t entity.type
outcome t outcome
patient r agent.who|entity.what Patient
policy u agent.policy
site t source.site
source r source.observer *
subtype t subtype
type t type
""",
}

# Choice-type suffixes that `key[x]` expands to, per parameter type.
_CHOICES = {
    "date": ("DateTime", "Period", "Instant", "Date"),
    "token": ("CodeableConcept", "Coding", "Code", "Boolean", "String"),
    "string": ("String",),
    "reference": ("Reference",),
    "quantity": ("Quantity", "Age", "Duration"),
    "number": ("Integer", "Decimal"),
    "uri": ("Uri",),
}


@dataclass(frozen=True)
class PathStep:
    key: str
    where: tuple[str, str] | None = None  # keep only elements with element[k] == v


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of one resource type."""

    resource_type: str
    name: str
    type: str  # token | string | date | reference | quantity | number | uri
    paths: tuple[tuple[PathStep, ...], ...]
    targets: frozenset[str] = frozenset()  # reference: allowed target types; empty = any
    blind: bool = False  # values stored only as keyed HMACs
    # Stored under another parameter's rows (same paths): e.g. Observation "patient" is
    # "subject" restricted to Patient targets, Patient "phone" is "telecom" with system=phone.
    stored_as: str = ""
    fixed_system: str | None = None  # alias via [system=x]: rows with this system only
    table: str = field(default="")

    @property
    def storage_name(self) -> str:
        return self.stored_as or self.name

    @property
    def storage_names(self) -> tuple[str, ...]:
        """Index ``param`` values holding this parameter's rows (a union for combo params)."""
        return tuple(self.stored_as.split(",")) if self.stored_as else (self.name,)


def _parse_path(text: str, ptype: str) -> list[tuple[PathStep, ...]]:
    steps: list[list[PathStep]] = [[]]
    for part in text.split("."):
        where = None
        if "[" in part and not part.endswith("[x]"):
            part, cond = part[:-1].split("[", 1)
            k, v = cond.split("=", 1)
            where = (k, v)
        if part.endswith("[x]"):
            base = part[:-3]
            steps = [s + [PathStep(base + sfx, where)] for s in steps for sfx in _CHOICES[ptype]]
        else:
            steps = [s + [PathStep(part, where)] for s in steps]
    return [tuple(s) for s in steps]


def _compile(rtype: str, spec: str) -> dict[str, SearchParam]:
    out: dict[str, SearchParam] = {}
    for line in spec.strip().splitlines():
        parts = line.split()
        if not parts:
            continue
        name, code, path_text = parts[0], parts[1], parts[2]
        ptype = TYPES[code]
        targets: frozenset[str] = frozenset()
        if ptype == "reference" and len(parts) > 3 and parts[3] != "*":
            targets = frozenset(parts[3].split(","))
        paths: list[tuple[PathStep, ...]] = []
        for p in path_text.split("|"):
            paths.extend(_parse_path(p, ptype))
        blind = name == "identifier" or (
            rtype in PERSON_TYPES and ptype != "reference" and name not in NOT_IDENTIFYING
        ) or (ptype == "string" and name in FREE_TEXT)
        table = "fhir_idx_token" if blind else TABLE_OF_TYPE[ptype]
        out[name] = SearchParam(rtype, name, ptype, tuple(paths), targets, blind, table=table)
    return _alias(out)


def _alias(params: dict[str, SearchParam]) -> dict[str, SearchParam]:
    """Share rows between parameters over the same paths (fewer index rows per resource)."""
    out = dict(params)
    for name, p in params.items():
        if p.type == "reference":
            # the widest parameter with the same paths stores; narrower ones filter targets
            for other in params.values():
                if (
                    other.name != name
                    and other.type == "reference"
                    and other.paths == p.paths
                    and p.targets
                    and (not other.targets or p.targets < other.targets)
                    and not other.stored_as
                ):
                    out[name] = _replace(p, stored_as=other.name)
                    break
        elif p.type == "token" and len(p.paths) == 1 and p.paths[0][-1].where is not None:
            step = p.paths[0][-1]
            where = step.where
            assert where is not None
            bare = p.paths[0][:-1] + (PathStep(step.key),)
            for other in params.values():
                if other.type == "token" and other.paths == (bare,) and where[0] == "system":
                    out[name] = _replace(p, stored_as=other.name, fixed_system=where[1])
                    break
        elif p.type == "string" and name in ("name", "phonetic") and "~name-other" in params:
            # a person's name = family + given + the rest (no extra rows for the whole name);
            # no phonetic algorithm: phonetic searches the name tokens
            out[name] = _replace(p, stored_as="family,given,~name-other")
        elif p.type == "string" and name == "address" and "~address-other" in params:
            # an address = its city, country, postal code, state + the rest (no extra rows
            # for what the narrower parameters already store: 4 a Patient fewer)
            out[name] = _replace(
                p, stored_as="address-city,address-country,address-postalcode,address-state,"
                "~address-other")
        elif p.type == "string" and name == "phonetic":
            if "name" in params and params["name"].paths == p.paths:
                out[name] = _replace(p, stored_as="name")
        elif len(p.paths) > 1 and p.type in ("token", "quantity"):
            # combo-code = code + component-code: query both instead of storing twice
            parts = [
                o.name
                for o in params.values()
                if o.name != name and o.type == p.type and set(o.paths) <= set(p.paths)
            ]
            covered = [path for n in parts for path in params[n].paths]
            if parts and sorted(map(repr, covered)) == sorted(map(repr, p.paths)):
                out[name] = _replace(p, stored_as=",".join(parts))
    return out


def _replace(p: SearchParam, **kw: object) -> SearchParam:
    from dataclasses import replace

    return replace(p, **kw)  # type: ignore[arg-type]


@cache
def _all_params(resource_type: str) -> dict[str, SearchParam]:
    return _compile(resource_type, _COMMON + _SPEC.get(resource_type, ""))


@cache
def searchable_params(resource_type: str) -> dict[str, SearchParam]:
    """The search parameters of ``resource_type`` (the common ``_tag`` etc. included).

    ``_id`` and ``_lastUpdated`` are not listed: they are columns of the resource table.
    Types without an entry in the table get the common parameters only (``_tag``, ...).
    Internal storage-only parameters (``~name-other``, ``~address-other``) are not listed.
    """
    return {k: v for k, v in _all_params(resource_type).items() if not k.startswith("~")}


def stored_params(resource_type: str) -> list[SearchParam]:
    """The parameters whose values are extracted and written (aliases excluded)."""
    return [p for p in _all_params(resource_type).values() if not p.stored_as]


SEARCHABLE_TYPES = tuple(sorted(_SPEC))
