"""Writes of index rows (STORE calls these in the resource write's own transaction)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, delete

from usmis.fhir.search.indexing import BlindIndex, Row, index_rows
from usmis.fhir.search.tables import INDEX_TABLES
from usmis.kit.db import insert_rows


def delete_index(conn: Connection, resource_type: str, resource_id: str) -> None:
    """Remove every index row of one resource (logical delete; before re-indexing)."""
    _delete_many(conn, [(resource_type, resource_id)])


# Built once: every resource write runs them, and constructing a statement per call cost
# more than its execution (the compiled form is cached on these objects' cache keys).
_DELETES = [
    delete(table).where(table.c.res_type == bindparam("t"), table.c.res_id == bindparam("i"))
    for table in INDEX_TABLES.values()
]


def _delete_many(conn: Connection, keys: list[tuple[str, str]]) -> None:
    if not keys:
        return
    params = [{"t": t, "i": i} for t, i in keys]
    for stmt in _DELETES:
        conn.execute(stmt, params)


def write_index(
    conn: Connection,
    resource_type: str,
    resource: dict[str, Any],
    hmac: BlindIndex,
    *,
    replace: bool = True,
) -> None:
    """Index the current version of one resource (replacing its previous rows)."""
    write_index_many(conn, [(resource_type, resource)], hmac, replace=replace)


def write_index_many(
    conn: Connection,
    items: Iterable[tuple[str, dict[str, Any]]],
    hmac: BlindIndex,
    *,
    replace: bool = True,
) -> None:
    """Index many resources with one COPY (PostgreSQL) or executemany per index table.

    ``replace=False`` is for resources known to be new (no old rows to delete).
    """
    by_table: dict[str, list[Row]] = {}
    keys: list[tuple[str, str]] = []
    memo: dict[str, str] = {}

    def blind(value: str) -> str:
        # Each value HMAC'd once a call: a resource's name words recur across name, family
        # and given, and an ingest batch's people share cities, streets and given names.
        # The memo lives as long as the call (the batch's plaintext is in memory anyway).
        h = memo.get(value)
        if h is None:
            if len(memo) >= 100_000:  # a very large call: bounded, not all kept
                memo.clear()
            h = memo[value] = hmac(value)
        return h

    for rtype, res in items:
        keys.append((rtype, res["id"]))
        for table, rows in index_rows(rtype, res, blind).items():
            by_table.setdefault(table, []).extend(rows)
    if replace:
        _delete_many(conn, keys)
    for name, rows in by_table.items():
        insert_rows(conn, INDEX_TABLES[name], rows)
