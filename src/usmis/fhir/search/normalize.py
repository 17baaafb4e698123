"""Pure normalisation shared by indexing and querying (same function on both sides).

Dates become inclusive ranges of epoch milliseconds (UTC).  A date or dateTime without a
time zone is read as UTC: a documented simplification (FHIR leaves it to the server).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

MIN_MS = -62135596800000  # 0001-01-01T00:00:00Z
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?$"
)

MAX_LEN = 255


def fold(text: str) -> str:
    """Case- and accent-insensitive form: NFKD, combining marks dropped, lower-cased."""
    if text.isascii():
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(unicodedata.normalize("NFC", stripped).lower().split())


def words(text: str) -> list[str]:
    """Folded word tokens (for blind name/address tokens)."""
    return _WORD.findall(fold(text))


def phone_digits(text: str) -> str:
    """Phone numbers compare on digits only (``+7 (701) 123-45-67`` == ``77011234567``)."""
    return "".join(c for c in text if c.isdigit())


def telecom_value(system: str | None, value: str) -> str:
    if system in ("phone", "fax", "sms", "pager"):
        d = phone_digits(value)
        return d or value.strip()
    if system == "email" or (system is None and "@" in value):
        return value.strip().lower()
    d = phone_digits(value)
    # an untyped contact point that looks like a phone number normalises like one
    return d if d and len(d) >= 5 and not any(c.isalpha() for c in value) else value.strip()


def _ms(y: int, mo: int = 1, d: int = 1, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000


def _next_month(y: int, mo: int) -> tuple[int, int]:
    return (y + 1, 1) if mo == 12 else (y, mo + 1)


def date_range(text: str) -> tuple[int, int] | None:
    """Inclusive [low, high] epoch-ms range a FHIR date/dateTime/instant stands for.

    The precision given is the range: ``2020`` is the whole year, ``2020-03-04T10:00`` a
    whole minute.  Returns None for text that is not a FHIR date.
    """
    m = _DATE.match(text)
    try:
        if m:
            y, mo, d = m.group(1), m.group(2), m.group(3)
            yi = int(y)
            if yi < 1:
                return None
            if mo is None:
                return _ms(yi), (_ms(yi + 1) - 1 if yi < 9999 else MAX_MS)
            moi = int(mo)
            if not 1 <= moi <= 12:
                return None
            if d is None:
                ny, nm = _next_month(yi, moi)
                return _ms(yi, moi), (_ms(ny, nm) - 1 if ny <= 9999 else MAX_MS)
            di = int(d)
            if not 1 <= di <= calendar.monthrange(yi, moi)[1]:
                return None
            lo = _ms(yi, moi, di)
            return lo, lo + 86_399_999
        m = _DATETIME.match(text)
        if not m:
            return None
        y, mo, d, h, mi, s, frac, tz = m.groups()
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), tzinfo=UTC)
        lo = calendar.timegm(dt.timetuple()) * 1000
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            lo -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * 1000
        if s is None:
            return lo, lo + 59_999
        if frac is None:
            return lo, lo + 999
        digits = frac[:3]
        lo += int(digits.ljust(3, "0"))
        width = 10 ** (3 - len(digits))
        return lo, lo + width - 1
    except (ValueError, OverflowError):
        return None


def date_prefixes(text: str) -> list[str] | None:
    """The partial dates a birth date is blind-indexed at: ``1980``, ``1980-05``, ``1980-05-12``."""
    day = text[:10]
    m = _DATE.match(day)
    if not m:
        return None
    out = [m.group(1)]
    if m.group(2):
        out.append(f"{m.group(1)}-{m.group(2)}")
    if m.group(3):
        out.append(day)
    return out


def decimal_range(text: str) -> tuple[float, float, float] | None:
    """(value, low, high) of a FHIR decimal with its implicit precision (``5.4`` = [5.35, 5.45))."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    half = Decimal(5) * Decimal(10) ** (exp - 1)
    return float(d), float(d - half), float(d + half)


def clip(text: str) -> str:
    return text if len(text) <= MAX_LEN else text[:MAX_LEN]
