"""Typed search-index tables (one row per indexed value), keyed by (res_type, res_id).

No foreign key to STORE's resource table: index rows belong to the current version and are
replaced/deleted by STORE's write path through :mod:`usmis.fhir.search.repository`.
Each table has one lookup index (type, param, value...) and one per-resource index
(type, id, param) for probing a candidate and for replacing a resource's rows.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, String, Table, text

from usmis.kit.db import metadata


def _key() -> list[Column[str]]:
    return [
        Column("res_type", String(64), nullable=False),
        Column("res_id", String(64), nullable=False),
        Column("param", String(64), nullable=False),
    ]


idx_token = Table(
    "fhir_idx_token",
    metadata,
    *_key(),
    Column("system", String(255)),
    Column("code", String(255), nullable=False),
    Column("text", String(255)),
    Index("ix_fhir_idx_token_lookup", "res_type", "param", "code", "system"),
    Index("ix_fhir_idx_token_res", "res_type", "res_id", "param"),
)

idx_string = Table(
    "fhir_idx_string",
    metadata,
    *_key(),
    Column("norm", String(255), nullable=False),
    Column("exact", String(255), nullable=False),
    Index(
        "ix_fhir_idx_string_lookup",
        "res_type",
        "param",
        "norm",
        postgresql_ops={"norm": "text_pattern_ops"},
    ),
    Index("ix_fhir_idx_string_res", "res_type", "res_id", "param"),
)

idx_date = Table(
    "fhir_idx_date",
    metadata,
    *_key(),
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    Index("ix_fhir_idx_date_lookup", "res_type", "param", "low", "high"),
    Index("ix_fhir_idx_date_res", "res_type", "res_id", "param"),
)

idx_reference = Table(
    "fhir_idx_reference",
    metadata,
    *_key(),
    Column("target_type", String(64)),
    Column("target_id", String(64)),
    Column("url", String(255)),
    Column("id_system", String(255)),
    Column("id_value", String(255)),
    Index("ix_fhir_idx_reference_lookup", "target_id", "param", "res_type", "target_type"),
    Index("ix_fhir_idx_reference_res", "res_type", "res_id", "param"),
    # only references that carry an identifier (most do not): migration fhir_search_0003
    Index("ix_fhir_idx_reference_ident", "res_type", "param", "id_value",
          postgresql_where=text("id_value IS NOT NULL"),
          sqlite_where=text("id_value IS NOT NULL")),
)

idx_quantity = Table(
    "fhir_idx_quantity",
    metadata,
    *_key(),
    Column("value", Float, nullable=False),
    Column("system", String(255)),
    Column("code", String(255)),
    Column("unit", String(255)),
    Index("ix_fhir_idx_quantity_lookup", "res_type", "param", "value"),
    Index("ix_fhir_idx_quantity_res", "res_type", "res_id", "param"),
)

INDEX_TABLES: dict[str, Table] = {
    t.name: t for t in (idx_token, idx_string, idx_date, idx_reference, idx_quantity)
}
