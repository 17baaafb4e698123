"""Writing and reading the extract directory.

Layout: ``DIR/<table>/part-<seq>.parquet`` plus ``DIR/manifest.json`` (what built it, the
as-of date, the watermark of the last incremental run).  An incremental run adds a new
part per table; readers keep the newest row per (source_system, source_record_id), so an
updated record replaces its earlier version without rewriting old parts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from usmis.oversight.extract.schema import FORBIDDEN_COLUMNS, TABLES

MANIFEST = "manifest.json"


@dataclass
class Manifest:
    """What an extract is: its builder, its as-of date and its incremental watermark."""

    builder: str  # 'store' | 'nation-dev' | 'bench'
    as_of: str  # ISO date: the end of the observation window
    watermark: str = ""  # ISO timestamp of the newest last_updated read
    parts: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def as_of_date(self) -> date:
        return date.fromisoformat(self.as_of)


def read_manifest(root: Path) -> Manifest | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    return Manifest(**json.loads(path.read_text()))


def write_manifest(root: Path, manifest: Manifest) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True))
    tmp.replace(root / MANIFEST)


def conform(name: str, data: pa.Table | dict[str, list[Any]] | list[dict[str, Any]]) -> pa.Table:
    """Cast ``data`` to the table's schema; missing columns become NULL, extra ones refused.

    Refusing unknown columns is what keeps identifiers (FORBIDDEN_COLUMNS) out of the extract.
    """
    schema = TABLES[name]
    if isinstance(data, list):
        names = {k for row in data for k in row}
    elif isinstance(data, dict):
        names = set(data)
    else:
        names = set(data.column_names)
    extra = names - set(schema.names)
    if extra:
        kind = "identifier " if extra & FORBIDDEN_COLUMNS else ""
        raise ValueError(f"extract table {name}: {kind}columns not in schema: {sorted(extra)}")
    if isinstance(data, list):
        return pa.Table.from_pylist(data, schema=schema)
    table = pa.table(data) if isinstance(data, dict) else data
    cols = [
        table.column(f.name).cast(f.type) if f.name in names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


def write_part(root: Path, name: str, table: pa.Table, seq: int, chunk: int = 0) -> Path:
    """Write one part of a table (already conformed) and return its path.

    ``seq`` numbers the increment (one per extract run), ``chunk`` the file within it.
    """
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{seq:05d}-{chunk:05d}.parquet"
    pq.write_table(table, path, compression="zstd")
    return path


def table_parts(root: Path, name: str) -> list[Path]:
    return sorted((root / name).glob("part-*.parquet"))


def increments(parts: list[Path]) -> int:
    """How many extract runs wrote these parts (more than one: versions must be merged)."""
    return len({p.name.split("-")[1] for p in parts})


def parquet_list(parts: list[Path]) -> str:
    return "[" + ", ".join(f"'{p.as_posix()}'" for p in parts) + "]"


# The current version of each source record across increments: the newest last_updated,
# on a tie the later increment (a row written again after its person's link changed keeps
# its last_updated).  Needs ``read_parquet(..., filename = true)``.
NEWEST = ("QUALIFY row_number() OVER (PARTITION BY source_system, source_record_id "
          "ORDER BY last_updated DESC NULLS LAST, filename DESC) = 1")


def latest_rows(root: Path, name: str, records: list[tuple[str, str]],
                where_in: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The current rows of table ``name`` for these (source_system, source_record_id)
    records, and those where the value of an SQL expression over the row's columns (a
    column name, say) is one of ``where_in[expression]``."""
    import duckdb

    parts = table_parts(root, name)
    where_in = {c: v for c, v in where_in.items() if v}
    if not parts or not (records or where_in):
        return []
    con = duckdb.connect(config={"threads": 1})
    try:
        con.register("wanted", pa.table({
            "s": pa.array([r[0] for r in records], pa.string()),
            "r": pa.array([r[1] for r in records], pa.string())}))
        files = parquet_list(parts)
        hits, tests = ["SELECT s, r FROM wanted"], ["EXISTS (SELECT 1 FROM wanted w WHERE "
                                                    "w.s = c.source_system AND "
                                                    "w.r = c.source_record_id)"]
        for n, (column, values) in enumerate(sorted(where_in.items())):
            con.register(f"v{n}", pa.table({"v": pa.array(values, pa.string())}))
            hits.append(f"SELECT source_system, source_record_id FROM read_parquet({files}) "
                        f"WHERE ({column}) IN (SELECT v FROM v{n})")
            tests.append(f"({column}) IN (SELECT v FROM v{n})")
        sql = f"""
            WITH hit AS ({" UNION ".join(hits)}), current AS (
                SELECT * FROM read_parquet({files}, filename = true) t
                SEMI JOIN hit ON t.source_system = hit.s AND t.source_record_id = hit.r
                {NEWEST}
            )
            SELECT c.* EXCLUDE (filename) FROM current c WHERE {" OR ".join(tests)}
        """
        rows: list[dict[str, Any]] = con.sql(sql).to_arrow_table().to_pylist()
        return rows
    finally:
        con.close()
