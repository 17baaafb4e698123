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
    not_,
    or_,
    select,
    true,
)

from usmis.fhir.search.indexing import BlindIndex
from usmis.fhir.search.normalize import date_range
from usmis.fhir.search.registry import SearchParam, searchable_params
from usmis.fhir.search.tables import INDEX_TABLES
from usmis.fhir.search.values import (
    IndexFrag,
    ValueParser,
    alias_filter,
    bad,
    param_is,
    point_date,
    split_escaped,
    split_prefix,
    unescape,
)

# The callable form receives the resource table or an alias of it (chains, _has).
Restrict = ColumnElement[bool] | Callable[[Any], ColumnElement[bool] | None] | None

# Result-shaping parameters (handled by the service, not filters).
CONTROL = frozenset(
    {
        "_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
        "_cursor", "_format", "_pretty", "_totalMethod",
    }
)  # fmt: skip
MAX_DEPTH = 3  # chains / _has nesting
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


@dataclass
class IndexCond:
    table: Table
    param: tuple[str, ...]  # the storage parameter name(s) in the index
    frag: IndexFrag  # condition on the index alias (includes alias filters)
    negate: bool
    rank: int


Cond = IndexCond | Callable[[FromClause], ColumnElement[bool]]


class Builder(ValueParser):
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
        super().__init__(dialect, hmac, base_url)
        self.src = source
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
            parts.append(point_date(prefix, rng))

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
        only = alias_filter(p)
        if modifier == "missing":
            if value not in ("true", "false"):
                raise bad(":missing takes true or false", name)
            return IndexCond(table, p.storage_names, only, value == "true", 3)
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
            return and_(only(i), or_(*(f(i) for f in parts)))

        return IndexCond(table, p.storage_names, frag, negate, _RANK.get(p.type, 3))

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
                alias_filter(p)(i),
            )
            .scalar_subquery()
        )
