"""KEK rotation: re-wrap every data key under a new key-encryption key, online.

Any table with columns ``kek_id`` and ``dek`` holds envelope-encrypted records (the FHIR
store, and any other domain that seals with :mod:`usmis.kit.crypto`); rotation finds them
all in the metadata.  Steps:

1. a new KEK becomes current in the key file (old ones are kept, *retired*: they still
   unwrap, never wrap);
2. wait until every server has re-read the key file (they check it at most every
   ``RELOAD_SECONDS``), so new writes use the new KEK;
3. re-wrap in small committed batches (``WHERE kek_id = old`` guards against a concurrent
   writer) until no row names an old KEK — bodies are never decrypted or rewritten;
4. optionally purge the retired KEKs from the key file.

Servers keep serving throughout: every row is readable under its ``kek_id`` at each step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, Table, and_, bindparam, func, select, update

from usmis.kit.crypto import RELOAD_SECONDS, Keyring, LocalKeyFile
from usmis.kit.db import load_all_tables, unit_of_work
from usmis.kit.logging import get_logger

log = get_logger("usmis.vault.rotation")


@dataclass
class RotationReport:
    new_kek_id: str
    rewrapped: dict[str, int] = field(default_factory=dict)
    purged: list[str] = field(default_factory=list)


def envelope_tables() -> list[Table]:
    """Every table holding wrapped data keys (columns ``kek_id`` and ``dek``)."""
    md = load_all_tables()
    return [t for t in md.sorted_tables if "kek_id" in t.c and "dek" in t.c]


def rewrap_table(engine: Engine, keys: Keyring, table: Table, new_kek: str, batch: int) -> int:
    pk = list(table.primary_key.columns)
    stmt = (
        update(table)
        .where(
            and_(*[c == bindparam(f"b_{c.name}") for c in pk]),
            table.c.kek_id == bindparam("b_old"),
        )
        .values(kek_id=bindparam("b_new"), dek=bindparam("b_dek"))
    )
    done = 0
    while True:
        with unit_of_work(engine, write=True) as conn:
            rows = conn.execute(
                select(*pk, table.c.kek_id, table.c.dek)
                .where(table.c.kek_id.is_not(None), table.c.kek_id != new_kek)
                .limit(batch)
            ).all()
            if not rows:
                return done
            params = []
            for r in rows:
                m = r._mapping
                p = {f"b_{c.name}": m[c.name] for c in pk}
                p.update(
                    b_old=m["kek_id"],
                    b_new=new_kek,
                    b_dek=keys.rewrap(m["kek_id"], m["dek"], new_kek),
                )
                params.append(p)
            conn.execute(stmt, params)
            done += len(params)
        log.info("rewrapped batch", table=table.name, rows=len(params), total=done)


def remaining(engine: Engine, kek_ids: list[str]) -> int:
    n = 0
    with engine.connect() as conn:
        for t in envelope_tables():
            n += conn.execute(
                select(func.count()).select_from(t).where(t.c.kek_id.in_(kek_ids))
            ).scalar_one()
    return int(n)


def rotate(
    engine: Engine,
    key_file: LocalKeyFile,
    *,
    batch: int = 1000,
    grace_seconds: float | None = None,
    purge: bool = False,
) -> RotationReport:
    keys = Keyring(key_file)
    old = key_file.kek_ids()
    new = key_file.add_kek()
    report = RotationReport(new)
    time.sleep(2 * RELOAD_SECONDS + 0.5 if grace_seconds is None else grace_seconds)
    for table in envelope_tables():
        report.rewrapped[table.name] = rewrap_table(engine, keys, table, new, batch)
    if purge:
        left = remaining(engine, old)
        if left:
            raise RuntimeError(f"{left} rows still name a retired KEK; not purging")
        key_file.purge(old)
        report.purged = old
    return report
