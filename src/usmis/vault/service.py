"""Reading identities out of the vault (the sealed FHIR store), through the policy.

Callers pass their access context: re-identification by an investigator, MPI review by a
registrar, the patient portal — each read is authorised and audited like any FHIR read.
"""

from __future__ import annotations

from sqlalchemy import Connection

from usmis.fhir.context import AccessContext
from usmis.fhir.service import FhirService
from usmis.kit.crypto import Keyring
from usmis.vault.model import Identity, identity_of


def identity(
    conn: Connection,
    keys: Keyring,
    access: AccessContext | None,
    resource_type: str,
    resource_id: str,
) -> Identity:
    """The direct identifiers of one Patient/Practitioner (NotFound/Gone/Forbidden)."""
    if resource_type not in ("Patient", "Practitioner", "RelatedPerson", "Person"):
        raise ValueError("identities belong to Patient, Practitioner, RelatedPerson, Person")
    return identity_of(FhirService(conn, keys, access).read(resource_type, resource_id))
