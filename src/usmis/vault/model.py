"""Identities as types whose repr never shows a value (STYLE rule 5).  Pure.

The identity vault *is* the encrypted FHIR store: a Patient's or Practitioner's direct
identifiers exist only inside its sealed body.  Code that must handle them in clear
(MPI matching, an investigator's audited re-identification, the portal) gets an
:class:`Identity`, so a stray log line or exception shows ``Identity(<masked>)``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

IIN_SYSTEM = "https://usmis.kz/sid/iin"


@dataclass(frozen=True, slots=True)
class Identity:
    resource_type: str
    id: str
    iin: str | None = field(default=None, repr=False)
    family: str | None = field(default=None, repr=False)
    given: tuple[str, ...] = field(default=(), repr=False)
    birth_date: str | None = field(default=None, repr=False)
    gender: str | None = field(default=None, repr=False)
    phones: tuple[str, ...] = field(default=(), repr=False)
    addresses: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        return f"Identity({self.resource_type}/{self.id}, <masked>)"

    __str__ = __repr__


def identity_of(resource: dict[str, Any]) -> Identity:
    """The direct identifiers of a Patient/Practitioner resource."""
    iin = next(
        (
            i.get("value")
            for i in resource.get("identifier") or []
            if isinstance(i, dict) and i.get("system") == IIN_SYSTEM
        ),
        None,
    )
    names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    phones = tuple(
        str(t.get("value"))
        for t in resource.get("telecom") or []
        if isinstance(t, dict) and t.get("system") == "phone" and t.get("value")
    )
    addresses = tuple(
        " ".join(
            [*(a.get("line") or []), a.get("city") or "", a.get("district") or ""]
        ).strip()
        for a in resource.get("address") or []
        if isinstance(a, dict)
    )
    return Identity(
        resource_type=str(resource.get("resourceType")),
        id=str(resource.get("id")),
        iin=iin if isinstance(iin, str) else None,
        family=official.get("family"),
        given=tuple(official.get("given") or ()),
        birth_date=resource.get("birthDate"),
        gender=resource.get("gender"),
        phones=phones,
        addresses=addresses,
    )


def normalise_phone(value: str) -> str:
    """Digits only, Kazakh national form 8XXXXXXXXXX → 7XXXXXXXXXX (blind-index input)."""
    digits = re.sub(r"\D", "", value)
    if len(digits) == 11 and digits.startswith("8"):
        digits = "7" + digits[1:]
    return digits


def normalise_name(value: str) -> str:
    """Case-folded, accents stripped, single spaces (blind-index input for name tokens)."""
    text = unicodedata.normalize("NFKD", value.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.split())
