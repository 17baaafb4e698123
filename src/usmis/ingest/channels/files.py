"""The file channel: a delivered file becomes one inbox message per record.

- CSV/TSV/JSON/NDJSON extracts: one message per row (raw row bytes; context names the
  file and line), mapped later by the source's declarative mapping — so one bad row never
  rejects its file, and re-delivering a file (or finishing one after a crash) only adds
  the rows not yet in the inbox.
- HL7 v2 batch files (MLLP-framed or newline-separated): one message per HL7 message,
  validated on arrival like the MLLP listener does.
- FHIR Bundles (a JSON Bundle, or NDJSON with one Bundle per line): one message per
  Bundle (see :mod:`usmis.ingest.mapping.fhir` for why a batch stays whole).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from usmis.config import Settings
from usmis.ingest import inbox
from usmis.ingest import repository as repo
from usmis.ingest.mapping import files as file_mapping
from usmis.ingest.mapping import hl7v2
from usmis.ingest.mapping.common import Reject
from usmis.ingest.model import Incoming, Source, sha256_hex
from usmis.kit.db import transaction

CHUNK = 2000


@dataclass
class FileReceipt:
    path: str
    records: int = 0
    new: int = 0
    rejected: int = 0


def records_of(source: Source, path: Path, data: bytes,
               ) -> tuple[str, list[str] | None, Iterator[tuple[str, bytes]]]:
    """(format, header, iterator of (message id, raw record)) for one file of a source."""
    fmt = _format(source, path)
    if fmt == "hl7v2":
        msgs = hl7v2.split_messages(data)
        return fmt, None, ((f"{path.name}#{i + 1}", m) for i, m in enumerate(msgs))
    if fmt == "fhir":
        lines = [ln for ln in data.split(b"\n") if ln.strip()] if path.suffix in {
            ".ndjson", ".jsonl"} else [data]

        return fmt, None, ((f"{path.name}:{i + 1}", ln) for i, ln in enumerate(lines))
    mapping = file_mapping.load_mapping(source.mapping or source.id, source.id)
    header, rows = file_mapping.split_file(data, mapping)
    return mapping.format, header, ((f"{path.name}:{n}", raw) for n, raw in rows)


def _format(source: Source, path: Path) -> str:
    suffix = path.suffix.lower()
    if "hl7v2" in source.formats or suffix in {".hl7", ".mllp"}:
        return "hl7v2"
    if "fhir" in source.formats:
        return "fhir"
    return source.formats[0] if source.formats else suffix.lstrip(".")


def load_file(
    engine: Engine, settings: Settings, source: Source, path: Path, *,
    on_progress: Callable[[int], None] | None = None,
) -> FileReceipt:
    """Put every record of ``path`` into the inbox (committed in chunks)."""
    data = path.read_bytes()
    fmt, header, records = records_of(source, path, data)
    receipt = FileReceipt(str(path))
    with transaction(engine) as conn:
        file_id, _ = repo.insert_file(conn, source_id=source.id, name=path.name,
                                      content_hash=sha256_hex(data), header=header, rows=0)
    batch: list[tuple[str, bytes]] = []

    def flush() -> None:
        with transaction(engine) as conn:
            if fmt == "hl7v2":
                for mid, raw in batch:
                    reject, iin, event = None, None, None
                    try:  # the control id names the message where there is one
                        mid = hl7v2.read_header(raw).control_id or mid
                    except Reject:
                        pass
                    try:
                        mapped = hl7v2.map_message(raw, source.id)
                        iin, event = mapped.iin_status, mapped.event_time
                        mid = mapped.message_id or mid
                    except Reject as r:
                        reject = r
                        receipt.rejected += 1
                    got = inbox.receive(conn, settings, Incoming(
                        source_id=source.id, channel="file", format=fmt, message_id=mid,
                        raw=raw, event_time=event, context={"file_id": file_id}),
                        reject, iin_status=iin)
                    receipt.new += int(got.new)
            else:
                msgs = [Incoming(source_id=source.id, channel="file", format=fmt,
                                 message_id=mid, raw=raw,
                                 context={"file_id": file_id, "line": mid.rsplit(":", 1)[-1]})
                        for mid, raw in batch]
                receipt.new += inbox.receive_many(conn, settings, msgs)
        if on_progress:
            on_progress(len(batch))
        receipt.records += len(batch)
        batch.clear()

    for rec in records:
        batch.append(rec)
        if len(batch) >= CHUNK:
            flush()
    if batch:
        flush()
    with transaction(engine) as conn:
        repo.set_file_rows(conn, file_id, receipt.records)
    return receipt
