"""What every mapper shares: the reject reason, dates, identifiers, bundle entries.

A :class:`Reject` names the rule, the field and a detail.  The detail never carries a
personal value (names, IINs, phones, addresses, birth dates): the field is named instead.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

SID = "https://usmis.kz/sid"
IIN_SYSTEM = f"{SID}/iin"
BIN_SYSTEM = f"{SID}/bin"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
TARIFF = "https://usmis.kz/cs/tariff"
UCUM = "http://unitsofmeasure.org"
LICENCE = f"{SID}/licence"

# Kazakhstan has used one zone (UTC+5) since 2024-03-01; timestamps without an offset are
# read in it.  Earlier data in UTC+6 regions would be off by an hour, which no rule here
# depends on.
LOCAL_TZ = timezone(timedelta(hours=5))

_NS = uuid.UUID("5b1f0c1e-8a47-4f5e-9a3c-6c1f1d2e3a4b")


class Reject(Exception):  # noqa: N818 - a domain word, not an "Error": the record is refused
    """A record the mapping refuses: which rule, which field, what exactly.

    ``ack`` is the HL7 acknowledgement code it earns (AE: data error, AR: refused outright);
    ``hl7_error`` a code of HL7 table 0357.
    """

    def __init__(
        self, rule: str, field: str, detail: str, *, ack: str = "AE", hl7_error: int = 102
    ) -> None:
        super().__init__(f"{rule} at {field}: {detail}")
        self.rule = rule
        self.field = field
        self.detail = detail
        self.ack = ack
        self.hl7_error = hl7_error


@dataclass
class Mapped:
    """The outcome of mapping one record: a transaction Bundle plus facts about it."""

    bundle: dict[str, Any]
    event_time: datetime | None = None
    message_id: str = ""
    iin_status: str | None = None  # valid | missing | invalid, when the record names a person
    # A40: (survivor source patient id, merged source patient id)
    merges: list[tuple[str, str]] = field(default_factory=list)


def source_system(source_id: str, kind: str) -> str:
    return f"{SID}/source/{source_id}/{kind}"


def source_uri(source_id: str) -> str:
    return f"https://usmis.kz/source/{source_id}"


def full_url(system: str, value: str) -> str:
    """A stable urn:uuid for a record, so repeated mappings produce identical Bundles: the
    UUID ``uuid.uuid5(_NS, system|value)`` (RFC 4122 §4.3), computed without building UUID
    objects (a mapped message makes several; the objects were 2 % of a worker's CPU)."""
    h = bytearray(hashlib.sha1(_NS.bytes + f"{system}|{value}".encode()).digest()[:16])
    h[6] = h[6] & 0x0F | 0x50  # version 5
    h[8] = h[8] & 0x3F | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"urn:uuid:{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def put_entry(resource: dict[str, Any], system: str, value: str) -> dict[str, Any]:
    """A conditional PUT on the source's own identifier (FHIR R4 http.html#cond-update)."""
    rtype = resource["resourceType"]
    return {
        "fullUrl": full_url(system, value),
        "resource": resource,
        "request": {
            "method": "PUT",
            "url": f"{rtype}?identifier={quote(system, safe=':/')}|{quote(value, safe='')}",
        },
    }


def transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def iin_valid(s: str) -> bool:
    """The IIN check digit (weights 1..11 mod 11, then 3..11,1,2; 10 twice: never issued)."""
    if len(s) != 12 or not s.isascii() or not s.isdigit():
        return False
    d = [ord(c) - 48 for c in s]
    c = sum((i + 1) * d[i] for i in range(11)) % 11
    if c == 10:
        c = sum(((i + 2) % 11 + 1) * d[i] for i in range(11)) % 11
        if c == 10:
            return False
    return c == d[11]


def iin_status(value: str | None) -> str:
    if not value:
        return "missing"
    return "valid" if iin_valid(value) else "invalid"


_HL7_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")


# A message repeats its times (MSH, EVN, PV1, OBR, each OBX): valid clinical ones are kept,
# by their text.  Never a personal one (a birth date does not stay in memory).
_SEEN_TS: dict[str, tuple[str, datetime]] = {}


def hl7_datetime(value: str, fld: str, *, personal: bool = False) -> tuple[str, datetime]:
    """HL7 TS/DTM → (FHIR dateTime at the precision given, an aware datetime).

    Raises :class:`Reject` (rule ``date-format``) when it is not a real date.
    """
    if personal:
        return _parse_ts(value, fld, "")
    seen = _SEEN_TS.get(value)
    if seen is None:
        seen = _parse_ts(value, fld, f" '{value[:40]}'")
        if len(_SEEN_TS) >= 4096:
            _SEEN_TS.clear()
        _SEEN_TS[value] = seen
    return seen


def _parse_ts(value: str, fld: str, shown: str) -> tuple[str, datetime]:
    m = _HL7_TS.match(value.strip())
    if not m:
        raise Reject("date-format", fld, f"not an HL7 date/time{shown}")
    y, mo, d, h, mi, s, tz = m.groups()
    try:
        tzinfo = LOCAL_TZ
        if tz:
            sign = 1 if tz[0] == "+" else -1
            tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])))
        dt = datetime(
            int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0),
            tzinfo=tzinfo,
        )
    except ValueError:
        raise Reject("date-format", fld, f"not a real date{shown}") from None
    if dt.year < 1850 or dt.year > 2100:
        raise Reject("date-range", fld, f"year out of range{shown}")
    if d is None:
        text = f"{y}-{mo}" if mo else y
    elif h is None:
        text = f"{y}-{mo}-{d}"
    else:
        text = dt.isoformat()
    return text, dt


def date_only(dt: datetime) -> str:
    return dt.date().isoformat()


def as_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def to_date(value: date | datetime) -> str:
    return value.isoformat()[:10]
