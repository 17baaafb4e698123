"""Search parameters → SQLAlchemy Core conditions over the index tables.

Each filter parameter becomes either a condition on the resource row itself (``_id``,
``_lastUpdated``, ``_has``) or an *index condition*: "a row of index table T with param P
and values matching F exists for this resource".  The most selective positive index
condition drives the query as ``id IN (SELECT res_id ...)``; the others are correlated
``EXISTS`` probes on the per-resource index (SQLite materialises an uncorrelated IN
subquery in full, which would be slow for a common code; PostgreSQL plans both forms as
semi-joins).  Comma = OR inside one condition; repeated parameters = AND of conditions.

Every failure is a :class:`~usmis.kit.errors.BadRequest` naming the parameter, not its value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Table,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from usmis.fhir.search.indexing import BlindIndex, parse_reference
from usmis.fhir.search.normalize import (
    date_prefixes,
    date_range,
    decimal_range,
    fold,
    telecom_value,
    words,
)
from usmis.fhir.search.registry import SearchParam, searchable_params
from usmis.fhir.search.tables import INDEX_TABLES
from usmis.kit.errors import BadRequest

# The callable form receives the resource table or an alias of it (chains, _has).
Restrict = ColumnElement[bool] | Callable[[Any], ColumnElement[bool] | None] | None

# Result-shaping parameters (handled by the service, not filters).
CONTROL = frozenset(
    {
        "_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
        "_cursor", "_format", "_pretty", "_totalMethod",
    }
)  # fmt: skip
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MAX_DEPTH = 3  # chains / _has nesting
_HIGH = "\U0010ffff"

# Lower rank = expected to be more selective = better query driver.
_RANK = {"reference": 1, "token": 2, "string": 2, "uri": 2, "date": 4, "quantity": 4, "number": 4}


@dataclass(frozen=True)
class ResourceSource:
    """Where STORE keeps the current version of each resource (one row per type+id)."""

    table: Table
    type_col: str = "resource_type"
    id_col: str = "id"
    deleted_col: str | None = "deleted"
    updated_col: str = "last_updated"


IndexFrag = Callable[[FromClause], ColumnElement[bool]]


@dataclass
class IndexCond:
    table: Table
    param: tuple[str, ...]  # the storage parameter name(s) in the index
    frag: IndexFrag  # condition on the index alias (includes alias filters)
    negate: bool
    rank: int


Cond = IndexCond | Callable[[FromClause], ColumnElement[bool]]


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


class Builder:
    """Builds conditions for one search request (dialect, key, source and restriction)."""

    def __init__(
        self,
        dialect: str,
        hmac: BlindIndex,
        source: ResourceSource,
        base_url: str,
        restrict: Restrict,
        strict: bool,
    ) -> None:
        self.dialect = dialect
        self.hmac = hmac
        self.src = source
        self.base_url = base_url.rstrip("/")
        self.restrict = restrict
        self.strict = strict
        self.warnings: list[str] = []

    # -- resource table helpers ------------------------------------------------------------
    def col(self, r: FromClause, name: str) -> Any:
        return r.c[name]

    def rid(self, r: FromClause) -> Any:
        return r.c[self.src.id_col]

    def base_conds(self, rtype: str, r: FromClause, *, main: bool) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = [r.c[self.src.type_col] == rtype]
        if self.src.deleted_col:
            out.append(r.c[self.src.deleted_col] == false())
        if main or callable(self.restrict):
            out += self.restriction(r)
        return out

    def restriction(self, r: FromClause) -> list[ColumnElement[bool]]:
        """The access restriction on ``r`` (a callable may return None: no restriction)."""
        if self.restrict is None:
            return []
        c = self.restrict(r) if callable(self.restrict) else self.restrict
        return [] if c is None else [c]

    def visible(self, r: FromClause) -> list[ColumnElement[bool]]:
        """Not deleted and allowed, for any type (includes); ``r`` is the source table."""
        out: list[ColumnElement[bool]] = []
        if self.src.deleted_col:
            out.append(r.c[self.src.deleted_col] == false())
        return out + self.restriction(r)

    def ignore(self, message: str, name: str) -> None:
        if self.strict:
            raise bad(message, name)
        self.warnings.append(f"{message} (ignored)")

    # -- filters ---------------------------------------------------------------------------
    def conditions(
        self, rtype: str, filters: list[tuple[str, str]], r: FromClause, depth: int = 0
    ) -> list[ColumnElement[bool]]:
        """All filter conditions on resource alias ``r`` (type/deleted/restrict excluded)."""
        conds: list[Cond] = []
        for name, value in filters:
            c = self.condition(rtype, name, value, depth)
            if c is not None:
                conds.append(c)
        return self.assemble(rtype, conds, r, depth)

    def assemble(
        self, rtype: str, conds: list[Cond], r: FromClause, depth: int = 0
    ) -> list[ColumnElement[bool]]:
        idx = [c for c in conds if isinstance(c, IndexCond)]
        positive = [c for c in idx if not c.negate]
        driver = min(positive, key=lambda c: c.rank) if positive else None
        out: list[ColumnElement[bool]] = []
        for c in conds:
            if not isinstance(c, IndexCond):
                out.append(c(r))
                continue
            # Top-level subqueries are siblings and may name the index table itself (building
            # an alias costs more than the query on a warm index); nested ones need aliases
            # so that they never auto-correlate to an enclosing use of the same table.
            i = c.table if depth == 0 else c.table.alias()
            if c is driver:
                sub = select(i.c.res_id).where(
                    i.c.res_type == rtype, param_is(i, c.param), c.frag(i)
                )
                out.append(self.rid(r).in_(sub))
                continue
            ex = exists().where(
                i.c.res_type == rtype, i.c.res_id == self.rid(r), param_is(i, c.param), c.frag(i)
            )
            out.append(not_(ex) if c.negate else ex)
        return out

    def id_set(self, rtype: str, filters: list[tuple[str, str]], depth: int) -> Select[Any]:
        """SELECT of the ids of ``rtype`` resources matching ``filters`` (chains, _has)."""
        r = self.src.table.alias()
        where = self.base_conds(rtype, r, main=False) + self.conditions(rtype, filters, r, depth)
        return select(self.rid(r)).where(*where)

    def condition(self, rtype: str, name: str, value: str, depth: int) -> Cond | None:
        if depth > MAX_DEPTH:
            raise bad("search parameter chain is nested too deep", name)
        if name.startswith("_has:"):
            return self.has(rtype, name, value, depth)
        base, _, modifier = name.partition(":")
        if "." in name:
            return self.chain(rtype, name, value, depth)
        if base == "_id":
            return self.id_cond(name, modifier, value)
        if base == "_lastUpdated":
            return self.updated_cond(name, modifier, value)
        if base == "_has":
            raise bad("_has needs the form _has:Type:reference:parameter", name)
        p = searchable_params(rtype).get(base)
        if p is None:
            self.ignore(f"unknown search parameter '{base}' for {rtype}", base)
            return None
        return self.param_cond(p, name, modifier, value)

    def id_cond(self, name: str, modifier: str, value: str) -> Cond | None:
        if modifier and modifier != "not":
            self.ignore(f"modifier ':{modifier}' is not supported on _id", name)
            return None
        ids = [unescape(v) for v in split_escaped(value, ",") if v]
        if not ids:
            raise bad("empty value", name)
        neg = modifier == "not"

        def f(r: FromClause) -> ColumnElement[bool]:
            c: ColumnElement[bool] = self.rid(r).in_(ids)
            return not_(c) if neg else c

        return f

    def updated_cond(self, name: str, modifier: str, value: str) -> Cond | None:
        if modifier:
            if modifier == "missing":
                return lambda r: true() if value == "false" else false()
            self.ignore(f"modifier ':{modifier}' is not supported on _lastUpdated", name)
            return None
        parts: list[Callable[[Any], ColumnElement[bool]]] = []
        for v in split_escaped(value, ","):
            prefix, rest = split_prefix(unescape(v))
            rng = date_range(rest)
            if rng is None:
                raise bad("invalid date value", name)
            parts.append(_point_date(prefix, rng))

        def f(r: FromClause) -> ColumnElement[bool]:
            c = r.c[self.src.updated_col]
            return or_(*(p(c) for p in parts))

        return f

    def has(self, rtype: str, name: str, value: str, depth: int) -> Cond:
        # _has:Observation:patient:code=x  /  _has:Observation:patient:_has:...=x
        bits = name.split(":", 3)
        if len(bits) < 4 or not bits[1] or not bits[2] or not bits[3]:
            raise bad("_has needs the form _has:Type:reference:parameter", name)
        _, src_type, ref_name, rest = bits
        rp = searchable_params(src_type).get(ref_name)
        if rp is None or rp.type != "reference":
            raise bad(f"'{ref_name}' is not a reference parameter of {src_type}", name)
        inner = self.id_set(src_type, [(rest, value)], depth + 1)
        ref = INDEX_TABLES["fhir_idx_reference"].alias()
        sub = select(ref.c.target_id).where(
            ref.c.res_type == src_type,
            ref.c.param == rp.storage_name,
            ref.c.target_type == rtype,
            ref.c.res_id.in_(inner),
        )
        return lambda r: self.rid(r).in_(sub)

    def chain(self, rtype: str, name: str, value: str, depth: int) -> Cond:
        head, rest = name.split(".", 1)
        ref_name, _, type_mod = head.partition(":")
        p = searchable_params(rtype).get(ref_name)
        if p is None or p.type != "reference":
            raise bad(f"'{ref_name}' is not a reference parameter of {rtype}", name)
        if type_mod:
            if p.targets and type_mod not in p.targets:
                raise bad(f"{type_mod} is not a target of '{ref_name}'", name)
            targets = [type_mod]
        elif p.targets:
            targets = sorted(p.targets)
        else:
            raise bad(f"chaining on '{ref_name}' needs a type modifier", name)
        chained = rest.split(".", 1)[0].split(":", 1)[0]
        targets = [
            t
            for t in targets
            if chained in searchable_params(t)
            or chained in ("_id", "_lastUpdated")
            or chained == "_has"
            or "." in rest
        ]
        if not targets:
            raise bad(f"unknown chained parameter '{chained}'", name)
        frags = []
        for t in targets:
            inner = self.id_set(t, [(rest, value)], depth + 1)
            frags.append((t, inner))

        def frag(i: FromClause) -> ColumnElement[bool]:
            return or_(*(and_(i.c.target_type == t, i.c.target_id.in_(s)) for t, s in frags))

        return IndexCond(
            INDEX_TABLES["fhir_idx_reference"], (p.storage_name,), frag, False, _RANK["reference"]
        )

    # -- one parameter of the index tables -------------------------------------------------
    def param_cond(self, p: SearchParam, name: str, modifier: str, value: str) -> Cond | None:
        table = INDEX_TABLES[p.table]
        alias_filter = _alias_filter(p)
        if modifier == "missing":
            if value not in ("true", "false"):
                raise bad(":missing takes true or false", name)
            return IndexCond(table, p.storage_names, alias_filter, value == "true", 3)
        if value == "":
            raise bad("empty value", name)
        values = split_escaped(value, ",")
        negate = False
        if p.type in ("token", "uri") or (p.blind and p.type != "string" and p.type != "date"):
            negate = modifier == "not"
            parts = [self.token_frag(p, name, modifier, v) for v in values]
        elif p.blind and p.type == "string":
            parts = [self.blind_string_frag(p, name, modifier, v) for v in values]
        elif p.blind and p.type == "date":
            parts = [self.blind_date_frag(p, name, modifier, v) for v in values]
        elif p.type == "string":
            parts = [self.string_frag(p, name, modifier, v) for v in values]
        elif p.type == "date":
            self.no_modifier(p, name, modifier)
            parts = [self.date_frag(name, v) for v in values]
        elif p.type == "reference":
            parts = [self.reference_frag(p, name, modifier, v) for v in values]
        elif p.type in ("quantity", "number"):
            self.no_modifier(p, name, modifier)
            parts = [self.quantity_frag(p, name, v) for v in values]
        else:  # pragma: no cover - registry types are closed
            raise bad(f"unsupported parameter type {p.type}", name)

        def frag(i: FromClause) -> ColumnElement[bool]:
            return and_(alias_filter(i), or_(*(f(i) for f in parts)))

        return IndexCond(table, p.storage_names, frag, negate, _RANK.get(p.type, 3))

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
            pat = "%" + _like_escape(fold(unescape(raw))) + "%"
            return lambda i: i.c.text.like(pat, escape="\\")
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
        if prefix in ("ge", "gt", "le", "lt", "sa", "eb", "ne") and len(v) == 4:
            # a range of whole years: OR over the blind year tokens (1800..this year)
            y, now = int(v), datetime.now(UTC).year
            ys = {
                "ge": range(y, now + 1), "gt": range(y + 1, now + 1), "sa": range(y + 1, now + 1),
                "le": range(1800, y + 1), "lt": range(1800, y), "eb": range(1800, y),
                "ne": [x for x in range(1800, now + 1) if x != y],
            }[prefix]  # fmt: skip
            hs = [self.hmac(f"d:{x:04d}") for x in ys]
            return lambda i: i.c.code.in_(hs) if hs else false()
        raise bad(
            f"'{p.name}' is stored blind: only eq (any precision) and ge/gt/le/lt/ne/sa/eb with "
            "a year are supported",
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

    # -- sorting ---------------------------------------------------------------------------
    def sort_expr(self, rtype: str, key: str, desc: bool, r: FromClause) -> Any:
        if key == "_id":
            return self.rid(r)
        if key == "_lastUpdated":
            return r.c[self.src.updated_col]
        p = searchable_params(rtype).get(key)
        if p is None:
            raise bad(f"unknown sort parameter '{key}' for {rtype}", "_sort")
        if p.blind:
            raise bad(f"cannot sort by '{key}': it is stored only as blind index tokens", "_sort")
        # the plain table: this scalar subquery is a sibling of the WHERE subqueries
        i = INDEX_TABLES[p.table]
        col = {
            "token": i.c.get("code"), "uri": i.c.get("code"), "string": i.c.get("norm"),
            "reference": i.c.get("target_id"), "quantity": i.c.get("value"),
            "number": i.c.get("value"),
            "date": i.c.get("high") if desc else i.c.get("low"),
        }[p.type]  # fmt: skip
        agg = func.max(col) if desc else func.min(col)
        return (
            select(agg)
            .where(
                i.c.res_type == rtype,
                i.c.res_id == self.rid(r),
                param_is(i, p.storage_names),
                _alias_filter(p)(i),
            )
            .scalar_subquery()
        )


def param_is(i: FromClause, names: tuple[str, ...]) -> ColumnElement[bool]:
    return i.c.param == names[0] if len(names) == 1 else i.c.param.in_(names)


def _alias_filter(p: SearchParam) -> IndexFrag:
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


def _point_date(prefix: str, rng: tuple[int, int]) -> Callable[[Any], ColumnElement[bool]]:
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


__all__ = ["Builder", "ResourceSource", "Restrict", "literal"]
