"""Search values → conditions on one index row (per parameter type and modifier).

Pure SQL expression building, no statements run: each function returns ``frag(i)``, a
boolean over an index-table alias ``i``.  Values and modifiers that cannot be served
raise :class:`~usmis.kit.errors.BadRequest` naming the parameter, never the value.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, FromClause, and_, exists, false, or_, true

from usmis.fhir.search.indexing import BlindIndex, parse_reference, text_word_hashes
from usmis.fhir.search.normalize import (
    date_prefixes,
    date_range,
    decimal_range,
    fold,
    telecom_value,
    words,
)
from usmis.fhir.search.registry import SearchParam
from usmis.fhir.search.tables import INDEX_TABLES
from usmis.kit.errors import BadRequest

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_HIGH = "\U0010ffff"

IndexFrag = Callable[[FromClause], ColumnElement[bool]]


def bad(message: str, name: str) -> BadRequest:
    return BadRequest(message, expression=[name])


def split_escaped(s: str, sep: str) -> list[str]:
    """Split on unescaped ``sep`` (FHIR search escaping: ``\\,`` ``\\|`` ``\\$`` ``\\\\``)."""
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if c == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def unescape(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def split_prefix(v: str) -> tuple[str, str]:
    if len(v) > 2 and v[:2] in PREFIXES and (v[2].isdigit() or v[2] in "-+."):
        return v[:2], v[2:]
    return "eq", v


def ms_to_dt(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


class ValueParser:
    """Per-request value parsing: the blind-index key, the dialect and our base URL."""

    def __init__(self, dialect: str, hmac: BlindIndex, base_url: str) -> None:
        self.dialect = dialect
        self.hmac = hmac
        self.base_url = base_url.rstrip("/")

    def no_modifier(self, p: SearchParam, name: str, modifier: str) -> None:
        if modifier:
            raise bad(f"modifier ':{modifier}' is not supported on {p.type} parameters", name)

    def token_frag(self, p: SearchParam, name: str, modifier: str, raw: str) -> IndexFrag:
        if modifier not in ("", "not", "text", "below") or (
            modifier == "below" and p.type != "uri"
        ):
            raise bad(f"modifier ':{modifier}' is not supported on '{p.name}'", name)
        if modifier == "text":
            if p.blind:
                raise bad(f"':text' is not supported on '{p.name}' (stored blind)", name)
            # the display text is stored as its words' keyed HMACs (indexing.blind_text):
            # every word asked for must be there
            hs = text_word_hashes(unescape(raw), self.hmac)
            if not hs:
                raise bad("empty value", name)
            return lambda i: and_(*(i.c.text.like(f"%{h}%") for h in hs))
        if p.type == "uri":
            v = unescape(raw)
            if modifier == "below":
                pat = _like_escape(v) + "%"
                return lambda i: i.c.code.like(pat, escape="\\")
            return lambda i: i.c.code == v
        bits = split_escaped(raw, "|")
        if len(bits) > 2:
            bits = [bits[0], "|".join(bits[1:])]
        system: str | None
        if len(bits) == 2:
            system, code = unescape(bits[0]), unescape(bits[1])
        else:
            system, code = None, unescape(bits[0])
        if p.fixed_system is not None:
            system = None  # phone=|x or phone=x: the alias fixes the contact system
        if code and p.blind:
            telecom = p.paths[0][-1].key == "telecom"
            contact = p.fixed_system or system
            norm = telecom_value(contact, code) if telecom else code.strip()
            code = self.hmac("t:" + norm)
        conds: list[Callable[[Any], ColumnElement[bool]]] = []
        if system is not None and not (p.blind and p.paths[0][-1].key == "telecom"):
            sys_v = system
            conds.append(
                (lambda i: i.c.system.is_(None)) if sys_v == "" else (lambda i: i.c.system == sys_v)
            )
        if code:
            conds.append(lambda i: i.c.code == code)
        elif system is None:
            raise bad("empty token", name)
        return lambda i: and_(*(c(i) for c in conds))

    def blind_string_frag(self, p: SearchParam, name: str, modifier: str, raw: str) -> IndexFrag:
        v = unescape(raw).strip()
        if modifier == "exact":
            h = self.hmac("x:" + v)
            return lambda i: i.c.code == h
        if modifier:
            raise bad(
                f"modifier ':{modifier}' is not supported on '{p.name}': it is stored only as "
                "blind index tokens (whole-word, case/accent-insensitive match, or :exact)",
                name,
            )
        hs = [self.hmac("w:" + w) for w in dict.fromkeys(words(v))]
        if not hs:
            raise bad("empty value", name)
        first, others = hs[0], hs[1:]
        tok = INDEX_TABLES["fhir_idx_token"]
        names = p.storage_names

        def frag(i: FromClause) -> ColumnElement[bool]:
            more = []
            for h in others:
                j = tok.alias()
                more.append(
                    exists().where(
                        j.c.res_type == i.c.res_type,
                        j.c.res_id == i.c.res_id,
                        param_is(j, names),
                        j.c.code == h,
                    )
                )
            return and_(i.c.code == first, *more)

        return frag

    def blind_date_frag(self, p: SearchParam, name: str, modifier: str, raw: str) -> IndexFrag:
        if modifier:
            raise bad(f"modifier ':{modifier}' is not supported on '{p.name}'", name)
        prefix, v = split_prefix(unescape(raw))
        pref = date_prefixes(v) if len(v) in (4, 7, 10) else None
        if pref is None or date_range(v) is None:
            raise bad(f"'{p.name}' takes a date YYYY, YYYY-MM or YYYY-MM-DD", name)
        if prefix == "eq":
            h = self.hmac("d:" + v)
            return lambda i: i.c.code == h
        if prefix == "ne" and len(v) == 4:
            y, now = int(v), datetime.now(UTC).year
            hs = [self.hmac(f"d:{x:04d}") for x in range(FIRST_BIRTH_YEAR, now + 1) if x != y]
            return lambda i: i.c.code.in_(hs)
        if prefix in ("ge", "gt", "le", "lt", "sa", "eb"):
            # a range of days, covered by the fewest aligned day/month/year blind tokens
            lo, hi = _day_span(prefix, v)
            hs = [self.hmac("d:" + t) for t in date_cover(lo, hi)]
            return lambda i: i.c.code.in_(hs) if hs else false()
        raise bad(
            f"'{p.name}' is stored blind: eq, ge, gt, le, lt, sa, eb (any precision) and ne "
            "(a year) are supported",
            name,
        )

    def string_frag(self, p: SearchParam, name: str, modifier: str, raw: str) -> IndexFrag:
        v = unescape(raw)
        if modifier == "exact":
            return lambda i: i.c.exact == v
        q = fold(v)
        if modifier == "contains":
            pat = "%" + _like_escape(q) + "%"
            return lambda i: i.c.norm.like(pat, escape="\\")
        if modifier:
            raise bad(f"modifier ':{modifier}' is not supported on string parameters", name)
        if not q:
            raise bad("empty value", name)
        if self.dialect == "postgresql":
            pat = _like_escape(q) + "%"
            return lambda i: i.c.norm.like(pat, escape="\\")
        hi = q + _HIGH  # SQLite compares UTF-8 bytes: a range scan on the index
        return lambda i: and_(i.c.norm >= q, i.c.norm < hi)

    def date_frag(self, name: str, raw: str) -> IndexFrag:
        prefix, v = split_prefix(unescape(raw))
        rng = date_range(v)
        if rng is None:
            raise bad("invalid date value", name)
        ql, qh = rng
        if prefix == "ap":
            ql, qh = _approx(ql, qh)
        f: dict[str, IndexFrag] = {
            "eq": lambda i: and_(i.c.low >= ql, i.c.high <= qh),
            "ne": lambda i: or_(i.c.low < ql, i.c.high > qh),
            "gt": lambda i: i.c.high > qh,
            "lt": lambda i: i.c.low < ql,
            "ge": lambda i: i.c.high >= ql,
            "le": lambda i: i.c.low <= qh,
            "sa": lambda i: i.c.low > qh,
            "eb": lambda i: i.c.high < ql,
            "ap": lambda i: and_(i.c.low <= qh, i.c.high >= ql),
        }
        return f[prefix]

    def quantity_frag(self, p: SearchParam, name: str, raw: str) -> IndexFrag:
        bits = [unescape(b) for b in split_escaped(raw, "|")]
        prefix, num = split_prefix(bits[0])
        rng = decimal_range(num)
        if rng is None or (p.type == "number" and len(bits) > 1) or len(bits) not in (1, 3):
            raise bad("invalid quantity value (number or number|system|code)", name)
        v, lo, hi = rng
        tol = abs(v) * 0.1
        f: dict[str, IndexFrag] = {
            "eq": lambda i: and_(i.c.value >= lo, i.c.value < hi),
            "ne": lambda i: or_(i.c.value < lo, i.c.value >= hi),
            "gt": lambda i: i.c.value > v,
            "lt": lambda i: i.c.value < v,
            "ge": lambda i: i.c.value >= v,
            "le": lambda i: i.c.value <= v,
            "sa": lambda i: i.c.value > v,
            "eb": lambda i: i.c.value < v,
            "ap": lambda i: and_(i.c.value >= v - tol, i.c.value <= v + tol),
        }
        value_f = f[prefix]
        if len(bits) == 1:
            return value_f
        system, code = bits[1], bits[2]

        def frag(i: FromClause) -> ColumnElement[bool]:
            c = [value_f(i)]
            if system:
                c += [i.c.system == system, i.c.code == code] if code else [i.c.system == system]
            elif code:
                c.append(or_(i.c.code == code, i.c.unit == code))
            return and_(*c)

        return frag

    def reference_frag(self, p: SearchParam, name: str, modifier: str, raw: str) -> IndexFrag:
        v = unescape(raw)
        if modifier == "identifier":
            bits = split_escaped(raw, "|")
            system, value = (
                (unescape(bits[0]), unescape("|".join(bits[1:]))) if len(bits) > 1
                else (None, v)
            )  # fmt: skip
            if not value:
                raise bad("empty identifier", name)
            h = self.hmac("t:" + value.strip())
            if system:
                return lambda i: and_(i.c.id_value == h, i.c.id_system == system)
            return lambda i: i.c.id_value == h
        type_mod = None
        if modifier:
            if not modifier[:1].isupper() or (p.targets and modifier not in p.targets):
                raise bad(f"modifier ':{modifier}' is not supported on '{p.name}'", name)
            type_mod = modifier
        if not v:
            raise bad("empty reference", name)
        if self.base_url and v.startswith(self.base_url + "/"):
            v = v[len(self.base_url) + 1 :]
        parsed = parse_reference(v)
        if parsed is None and ("/" in v or ":" in v):
            url = v
            return lambda i: i.c.url == url
        if parsed is not None:
            t, rid = parsed
            if type_mod and type_mod != t:
                return lambda i: false()
            return lambda i: and_(i.c.target_type == t, i.c.target_id == rid)
        if type_mod:
            return lambda i: and_(i.c.target_type == type_mod, i.c.target_id == v)
        return lambda i: i.c.target_id == v


FIRST_BIRTH_YEAR = 1800  # blind date ranges are expanded from here to this year


def _day_span(prefix: str, v: str) -> tuple[date, date]:
    """The birth dates a blind date range (prefix + partial date) stands for, in days."""
    first = date(
        int(v[:4]), int(v[5:7] or 1) if len(v) > 4 else 1, int(v[8:10]) if len(v) > 7 else 1
    )
    if len(v) == 4:
        last = date(first.year, 12, 31)
    elif len(v) == 7:
        last = date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])
    else:
        last = first
    floor, ceil = date(FIRST_BIRTH_YEAR, 1, 1), date(datetime.now(UTC).year, 12, 31)
    one = timedelta(days=1)
    if prefix == "ge":
        return first, ceil
    if prefix in ("gt", "sa"):
        return last + one, ceil
    if prefix == "le":
        return floor, last
    return floor, first - one  # lt, eb


def date_cover(lo: date, hi: date) -> list[str]:
    """Fewest ``YYYY`` / ``YYYY-MM`` / ``YYYY-MM-DD`` tokens covering exactly [lo, hi]."""
    out: list[str] = []
    d = lo
    one = timedelta(days=1)
    while d <= hi:
        year_end = date(d.year, 12, 31)
        month_end = date(d.year, d.month, calendar.monthrange(d.year, d.month)[1])
        if d.month == 1 and d.day == 1 and year_end <= hi:
            out.append(f"{d.year:04d}")
            d = year_end + one
        elif d.day == 1 and month_end <= hi:
            out.append(f"{d.year:04d}-{d.month:02d}")
            d = month_end + one
        else:
            out.append(d.isoformat())
            d += one
    return out


def param_is(i: FromClause, names: tuple[str, ...]) -> ColumnElement[bool]:
    return i.c.param == names[0] if len(names) == 1 else i.c.param.in_(names)


def alias_filter(p: SearchParam) -> IndexFrag:
    if p.stored_as and p.type == "reference" and p.targets:
        targets = sorted(p.targets)
        return lambda i: i.c.target_type.in_(targets)
    if p.fixed_system is not None:
        fixed = p.fixed_system
        return lambda i: i.c.system == fixed
    return lambda i: true()


def _approx(ql: int, qh: int) -> tuple[int, int]:
    """ap on dates: the value's range widened by 10% of its distance from now (≥ 1 day)."""
    now = int(datetime.now(UTC).timestamp() * 1000)
    gap = max(abs(now - ql) // 10, 86_400_000)
    return ql - gap, qh + gap


def point_date(prefix: str, rng: tuple[int, int]) -> Callable[[Any], ColumnElement[bool]]:
    """Prefix semantics for an instant column (``_lastUpdated``): the value is a point."""
    ql, qh = rng
    if prefix == "ap":
        ql, qh = _approx(ql, qh)
    lo, hi = ms_to_dt(ql), ms_to_dt(qh) + timedelta(microseconds=999)
    f: dict[str, Callable[[Any], ColumnElement[bool]]] = {
        "eq": lambda c: and_(c >= lo, c <= hi),
        "ne": lambda c: or_(c < lo, c > hi),
        "gt": lambda c: c > hi,
        "lt": lambda c: c < lo,
        "ge": lambda c: c >= lo,
        "le": lambda c: c <= hi,
        "sa": lambda c: c > hi,
        "eb": lambda c: c < lo,
        "ap": lambda c: and_(c >= lo, c <= hi),
    }
    return f[prefix]
