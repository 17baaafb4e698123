"""The store's calls into search (``usmis.fhir.search``, owned by the search engineer).

Looked up at call time so the store works (create/read/update/history, no search) in a
tree where search has not landed yet; once it has, every write indexes in the same
transaction.  The API is the one documented in docs/fhir-search.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from sqlalchemy import Connection

from usmis.kit.errors import BadRequest

BlindIndex = Callable[[str], str]


@cache
def _search_module() -> Any:
    try:
        return importlib.import_module("usmis.fhir.search")
    except ImportError:
        return None


def _fn(name: str) -> Any:
    mod = _search_module()
    return getattr(mod, name, None) if mod is not None else None


def write_index_many(
    conn: Connection,
    items: Iterable[tuple[str, dict[str, Any]]],
    hmac: BlindIndex,
    *,
    replace: bool,
) -> None:
    fn = _fn("write_index_many")
    if fn is not None:
        fn(conn, list(items), hmac, replace=replace)


def delete_index(conn: Connection, resource_type: str, resource_id: str) -> None:
    fn = _fn("delete_index")
    if fn is not None:
        fn(conn, resource_type, resource_id)


def search(conn: Connection, resource_type: str, params: list[tuple[str, str]], **kw: Any) -> Any:
    fn = _fn("search")
    if fn is None:
        raise BadRequest("search is not available in this build", expression=[resource_type])
    return fn(conn, resource_type, params, **kw)


def searchable_params(resource_type: str) -> dict[str, Any]:
    fn = _fn("searchable_params")
    if fn is None:
        return {}
    result: dict[str, Any] = fn(resource_type)
    return result
