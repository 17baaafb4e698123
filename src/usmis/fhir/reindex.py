"""Rewrite the search index of stored resources (``usmis db reindex``).

For a change of what the index keeps: migration ``fhir_search_0005`` erased the token
display texts and free-text strings that were kept in plaintext before they were stored
blind, and this writes them again, blind, from the encrypted resources.  Each batch is its
own transaction, its rows locked while it is rewritten (a concurrent update waits, so
the index never goes back to an older version); it may be run again at any time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import orjson
from sqlalchemy import Engine, select

from usmis.fhir import indexing
from usmis.fhir.service import SEARCH_PURPOSE, open_body
from usmis.fhir.tables import resource
from usmis.kit.crypto import Keyring
from usmis.kit.db import unit_of_work


def reindex(engine: Engine, keys: Keyring, *, types: list[str] | None = None,
            batch: int = 500, progress: Callable[[str, int], None] | None = None) -> int:
    """Index every live resource (of ``types``, or all) again; returns how many."""
    hmac = partial(keys.blind_index, SEARCH_PURPOSE)
    with engine.connect() as conn:
        todo = types or list(conn.execute(
            select(resource.c.resource_type).distinct()).scalars())
    done = 0
    for rtype in sorted(todo):
        last = ""
        while True:
            with unit_of_work(engine, write=True) as conn:
                query = select(resource).where(
                    resource.c.resource_type == rtype, resource.c.deleted.is_(False),
                    resource.c.id > last).order_by(resource.c.id).limit(batch)
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update()
                rows = conn.execute(query).all()
                if not rows:
                    break
                indexing.write_index_many(
                    conn, [(rtype, orjson.loads(open_body(keys, r))) for r in rows], hmac,
                    replace=True)
            last = rows[-1].id
            done += len(rows)
            if progress is not None:
                progress(rtype, len(rows))
    return done
