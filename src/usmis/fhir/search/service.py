"""search(): one FHIR search request → one page of ids, a total, includes and links.

Paging is keyset ("seek") paging, not OFFSET: the ``_cursor`` in next/previous links
carries the sort-key values of the page's last (or first) row, so a page never repeats or
skips a resource because others were inserted or deleted meanwhile, and deep pages cost
the same as the first.  Order is the requested ``_sort`` keys (missing values last) with
the resource id as the final tiebreak, so the order is total and stable.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, Connection, FromClause, and_, func, or_, select, tuple_

from usmis.fhir.search.indexing import BlindIndex
from usmis.fhir.search.query import CONTROL, Builder, ResourceSource, Restrict
from usmis.fhir.search.registry import searchable_params
from usmis.fhir.search.tables import INDEX_TABLES
from usmis.fhir.search.values import bad

DEFAULT_COUNT = 20
MAX_COUNT = 1000
MAX_INCLUDES = 5000  # per page, all _include/_revinclude rounds together
INCLUDE_ROUNDS = 3  # :iterate depth
SUMMARY = ("true", "text", "data", "count", "false")


@dataclass
class SearchResult:
    resource_type: str
    ids: list[str]
    total: int | None
    includes: list[tuple[str, str]] = field(default_factory=list)
    self_link: str = ""
    next_link: str | None = None
    previous_link: str | None = None
    summary: str | None = None
    elements: list[str] | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Request:
    filters: list[tuple[str, str]]
    count: int
    sort: list[tuple[str, bool]]
    total: str
    summary: str | None
    elements: list[str] | None
    includes: list[tuple[str, bool]]  # (value, iterate)
    revincludes: list[tuple[str, bool]]
    cursor: str | None


def default_source() -> ResourceSource:
    from usmis.fhir.tables import resource

    return ResourceSource(resource)


def search(
    conn: Connection,
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    base_url: str,
    hmac: BlindIndex,
    restrict: Restrict = None,
    source: ResourceSource | None = None,
    strict: bool = True,
) -> SearchResult:
    """Run one search; raises BadRequest (400) naming the offending parameter."""
    src = source or default_source()
    if conn.dialect.name == "postgresql":
        _no_generic_plans(conn)
    b = Builder(conn.dialect.name, hmac, src, base_url, restrict, strict)
    req = _parse(resource_type, params, b)
    r = src.table
    where = b.base_conds(resource_type, r, main=True) + b.conditions(resource_type, req.filters, r)
    result = SearchResult(
        resource_type,
        [],
        None,
        summary=req.summary,
        elements=req.elements,
        warnings=b.warnings,
    )
    link_params = [(k, v) for k, v in params if k != "_cursor"]
    result.self_link = _link(base_url, resource_type, params)
    keys = [(b.sort_expr(resource_type, k, d, r), d) for k, d in req.sort]
    count_stmt = select(func.count()).select_from(r).where(*where)
    if req.summary == "count" or req.count == 0:
        result.total = conn.execute(count_stmt).scalar_one()
        return result

    rid = b.rid(r)
    direction, after = "a", None
    if req.cursor:
        direction, after = _decode_cursor(req.cursor, len(keys))
    backward = direction == "b"
    stmt = select(rid, *(k for k, _ in keys)).where(*where)
    if after is not None:
        stmt = stmt.where(_seek(keys, rid, after, backward))
    order = [_ord(k, (not desc) != backward, backward) for k, desc in keys]
    order.append(rid.desc() if backward else rid.asc())
    rows = list(conn.execute(stmt.order_by(*order).limit(req.count + 1)).all())
    more = len(rows) > req.count
    rows = rows[: req.count]
    if backward:
        rows.reverse()
    result.ids = [row[0] for row in rows]
    if rows:
        first, last = rows[0], rows[-1]
        has_next = more if not backward else True
        has_prev = (after is not None) if not backward else more
        if has_next:
            result.next_link = _link(
                base_url, resource_type, link_params + [("_cursor", _cursor("a", last))]
            )
        if has_prev:
            result.previous_link = _link(
                base_url, resource_type, link_params + [("_cursor", _cursor("b", first))]
            )
    if req.total != "none":
        if after is None and not more:
            result.total = len(rows)  # the first page holds everything: no COUNT needed
        else:
            result.total = conn.execute(count_stmt).scalar_one()
    if req.includes or req.revincludes:
        result.includes = _includes(conn, b, resource_type, result.ids, req)
    return result


def _no_generic_plans(conn: Connection) -> None:
    """psycopg server-prepares a statement run 5 times, and PostgreSQL may then switch to a
    generic plan that ignores the actual, very selective values (10x slower searches).
    Unprepared statements are always planned for their values; turning preparation off on
    this DBAPI connection is a client-side attribute (no round trip).  It applies to the
    rest of the unit of work; the pool restores it when the connection is returned
    (:func:`usmis.kit.db.make_engine`)."""
    driver = conn.connection.driver_connection
    if getattr(driver, "prepare_threshold", None) is not None:
        driver.prepare_threshold = None  # type: ignore[union-attr]


def _nullable(k: Any) -> bool:
    """Sort keys on index values may be missing; NOT NULL columns (id, last_updated) not —
    and a plain ORDER BY on those can walk the resource table's index."""
    return bool(getattr(k, "nullable", True))


def _ord(k: Any, asc: bool, backward: bool) -> Any:
    # Missing values sort last in the requested order, hence first when walking backward.
    e = k.asc() if asc else k.desc()
    if not _nullable(k):
        return e
    return e.nulls_first() if backward else e.nulls_last()


def _seek(
    keys: list[tuple[Any, bool]], rid: Any, after: list[Any], backward: bool
) -> ColumnElement[bool]:
    """Rows strictly after (or, walking backward, before) the cursor row in the sort order."""
    *vals, last_id = after
    if all(not _nullable(k) for k, _ in keys) and len({d for _, d in keys}) <= 1:
        # one direction, no NULLs (e.g. -_lastUpdated): a row-value comparison, which
        # PostgreSQL turns into an index range on (type, last_updated, ...)
        desc = keys[0][1] if keys else False
        row, cur = tuple_(*(k for k, _ in keys), rid), tuple_(*vals, last_id)
        return row < cur if desc != backward else row > cur
    cond: ColumnElement[bool] = rid < last_id if backward else rid > last_id
    for (k, desc), v in reversed(list(zip(keys, vals, strict=True))):
        moves_up = (not desc) != backward  # the walk goes towards larger values
        if v is None:
            # nulls are last: forward nothing non-null follows; backward every non-null precedes
            cond = (
                or_(k.is_not(None), and_(k.is_(None), cond))
                if backward
                else and_(k.is_(None), cond)
            )
            continue
        beyond = (k > v) if moves_up else (k < v)
        if backward or not _nullable(k):
            cond = or_(beyond, and_(k == v, cond))
        else:
            cond = or_(k.is_(None), beyond, and_(k == v, cond))
    return cond


def _cursor(direction: str, row: Any) -> str:
    vals = [_enc(v) for v in row[1:]] + [row[0]]
    raw = json.dumps([direction, vals], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _enc(v: Any) -> Any:
    if isinstance(v, datetime):
        return {"t": v.isoformat()}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict) and isinstance(v.get("t"), str):
        return datetime.fromisoformat(v["t"])
    if v is None or isinstance(v, str | int | float):
        return v
    raise ValueError("bad cursor value")


def _decode_cursor(text: str, nkeys: int) -> tuple[str, list[Any]]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        direction, vals = json.loads(raw)
        if direction not in ("a", "b") or not isinstance(vals, list) or len(vals) != nkeys + 1:
            raise ValueError
        if not isinstance(vals[-1], str):
            raise ValueError
        return direction, [_dec(v) for v in vals]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise bad("invalid or expired _cursor (the sort must not change between pages)",
                  "_cursor") from None  # fmt: skip


def _link(base_url: str, rtype: str, params: list[tuple[str, str]]) -> str:
    q = urlencode(params)
    return f"{base_url.rstrip('/')}/{rtype}" + (f"?{q}" if q else "")


def _parse(rtype: str, params: list[tuple[str, str]], b: Builder) -> _Request:
    req = _Request([], DEFAULT_COUNT, [], "accurate", None, None, [], [], None)
    for name, value in params:
        if "\x00" in name or "\x00" in value:
            raise bad("search parameters must not contain NUL characters", name.replace("\x00", ""))
        base = name.split(":", 1)[0]
        if base not in CONTROL:
            req.filters.append((name, value))
            continue
        if base == "_count":
            try:
                req.count = min(int(value), MAX_COUNT)
            except ValueError:
                raise bad("_count must be a non-negative integer", "_count") from None
            if req.count < 0:
                raise bad("_count must be a non-negative integer", "_count")
        elif base == "_sort":
            req.sort = []
            for key in value.split(","):
                key = key.strip()
                desc = key.startswith("-")
                key = key.lstrip("-")
                if not key:
                    raise bad("empty _sort key", "_sort")
                req.sort.append((key, desc))
        elif base == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise bad("_total must be none, estimate or accurate", "_total")
            req.total = value
        elif base == "_totalMethod":  # fhirpy/Aidbox spelling: count | estimate | none
            if value not in ("count", "estimate", "none"):
                raise bad("_totalMethod must be count, estimate or none", "_totalMethod")
            req.total = "accurate" if value == "count" else value
        elif base == "_summary":
            if value not in SUMMARY:
                raise bad("_summary must be true, text, data, count or false", "_summary")
            req.summary = value
        elif base == "_elements":
            req.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif base in ("_include", "_revinclude"):
            mod = name.partition(":")[2]
            if mod not in ("", "iterate", "recurse"):
                raise bad(f"modifier ':{mod}' is not supported on {base}", base)
            target = req.includes if base == "_include" else req.revincludes
            target.append((value, mod != ""))
        elif base == "_cursor":
            req.cursor = value
    for value, _ in req.includes + req.revincludes:
        _parse_include(value, "_include")
    return req


def _parse_include(value: str, name: str) -> tuple[str, str, str | None]:
    if value == "*":
        return "*", "*", None
    bits = value.split(":")
    if len(bits) not in (2, 3) or not all(bits):
        raise bad(f"{name} needs the form Type:parameter[:TargetType]", name)
    src, param = bits[0], bits[1]
    if param != "*":
        p = searchable_params(src).get(param)
        if p is None or p.type != "reference":
            raise bad(f"'{param}' is not a reference parameter of {src}", name)
    return src, param, bits[2] if len(bits) == 3 else None


def _ref_params(rtype: str, param: str) -> list[tuple[str, frozenset[str]]]:
    """(storage name, target filter) of the reference params an include names."""
    ps = searchable_params(rtype)
    chosen = (
        [p for p in ps.values() if p.type == "reference" and not p.stored_as]
        if param == "*"
        else [ps[param]]
    )
    return [(p.storage_name, p.targets if p.stored_as else frozenset()) for p in chosen]


def _includes(
    conn: Connection, b: Builder, rtype: str, ids: list[str], req: _Request
) -> list[tuple[str, str]]:
    """(type, id) of included resources: existing, not deleted, visible, not in the page."""
    ref = INDEX_TABLES["fhir_idx_reference"]
    r = b.src.table
    seen: set[tuple[str, str]] = {(rtype, i) for i in ids}
    out: list[tuple[str, str]] = []
    frontier: dict[str, set[str]] = {rtype: set(ids)}
    for round_no in range(INCLUDE_ROUNDS):
        found: dict[str, set[str]] = {}
        for specs, reverse in ((req.includes, False), (req.revincludes, True)):
            for value, iterate in specs:
                if round_no > 0 and not iterate:
                    continue
                src, param, target = _parse_include(value, "_include")
                for cur_type, cur_ids in frontier.items():
                    if not cur_ids:
                        continue
                    pairs = _include_step(conn, b, ref, r, src, param, target, cur_type,
                                          sorted(cur_ids), reverse)  # fmt: skip
                    for t, i in pairs:
                        if (t, i) not in seen and len(out) < MAX_INCLUDES:
                            seen.add((t, i))
                            out.append((t, i))
                            found.setdefault(t, set()).add(i)
        if not found:
            break
        frontier = found
    return out


def _include_step(
    conn: Connection,
    b: Builder,
    ref: Any,
    r: FromClause,
    src: str,
    param: str,
    target: str | None,
    cur_type: str,
    cur_ids: list[str],
    reverse: bool,
) -> list[tuple[str, str]]:
    if src != "*" and not reverse and src != cur_type:
        return []
    res_type = cur_type if src == "*" else src
    params = _ref_params(res_type, "*" if param == "*" else param)
    tcol, icol = b.col(r, b.src.type_col), b.rid(r)
    out: list[tuple[str, str]] = []
    for storage, targets in params:
        for chunk in (cur_ids[i : i + 500] for i in range(0, len(cur_ids), 500)):
            conds = [ref.c.res_type == res_type, ref.c.param == storage]
            if targets:
                conds.append(ref.c.target_type.in_(sorted(targets)))
            if reverse:
                conds += [ref.c.target_type == cur_type, ref.c.target_id.in_(chunk)]
                join_on = and_(tcol == ref.c.res_type, icol == ref.c.res_id)
                cols = (ref.c.res_type, ref.c.res_id)
            else:
                conds += [ref.c.res_id.in_(chunk)]
                if target:
                    conds.append(ref.c.target_type == target)
                join_on = and_(tcol == ref.c.target_type, icol == ref.c.target_id)
                cols = (ref.c.target_type, ref.c.target_id)
            visible = b.visible(r)
            stmt = (
                select(*cols).distinct().select_from(ref.join(r, join_on)).where(*conds, *visible)
            )
            out.extend((t, i) for t, i in conn.execute(stmt).all())
    return out
