"""The store's calls into search (``usmis.fhir.search``, owned by the search engineer)
and into the access package's write hooks, in one place.

Index rows are written in the same transaction as the resource (docs/fhir-search.md);
``usmis.access.care.on_write`` projects care relationships and consents into the
policy's tables, also in the same transaction (docs/access.md).  The access hooks are
looked up at call time so the store works in a tree where they have not landed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from sqlalchemy import Connection

from usmis.fhir import search as _search

BlindIndex = Callable[[str], str]
search = _search.search
delete_index = _search.delete_index


def write_index_many(
    conn: Connection,
    items: Iterable[tuple[str, dict[str, Any]]],
    hmac: BlindIndex,
    *,
    replace: bool,
) -> None:
    _search.write_index_many(conn, items, hmac, replace=replace)


def searchable_params(resource_type: str) -> dict[str, Any]:
    return dict(_search.searchable_params(resource_type))


@cache
def _access_fn(module: str, name: str) -> Callable[..., Any] | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    fn = getattr(mod, name, None)
    return fn if callable(fn) else None


def classify(resource: dict[str, Any]) -> str | None:
    """The consent category of a resource (``usmis.access.sensitivity.classify``)."""
    fn = _access_fn("usmis.access.sensitivity", "classify")
    return fn(resource) if fn is not None else None


def on_write(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    patient_id: str | None,
    resource: dict[str, Any] | None,
    *,
    new: bool = False,
) -> None:
    """Tell the policy about a write (None = deleted): care relationships, consents.
    ``new``: the resource id was just created, so it has no projected rows to replace."""
    fn = _access_fn("usmis.access.care", "on_write")
    if fn is not None:
        fn(conn, resource_type, resource_id, patient_id, resource, new=new)


def on_create_many(
    conn: Connection, items: list[tuple[str, str, str | None, dict[str, Any]]]
) -> None:
    """:func:`on_write` for resources just created, (type, id, patient id, resource) each:
    their projections in one statement per table."""
    fn = _access_fn("usmis.access.care", "on_create_many")
    if fn is not None and items:
        fn(conn, items)

