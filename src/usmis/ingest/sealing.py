"""Sealing of raw inbox content: raw HL7/CSV carries names and IINs in plaintext.

Each message is encrypted with AES-256-GCM under its own data key, wrapped by the
key-encryption key of :mod:`usmis.kit.crypto` (columns ``kek_id``/``dek``, so
``usmis keys rotate`` re-wraps them).  The AAD binds the ciphertext to its source and
content hash, so it cannot be moved to another row.
"""

from __future__ import annotations

from typing import Any

from usmis.config import Settings
from usmis.kit.crypto import Keyring, keyring_for


def keys(settings: Settings) -> Keyring:
    return keyring_for(settings.resolved_key_file)


def _aad(source_id: str, content_hash: str) -> bytes:
    return f"ingest_inbox/{source_id}/{content_hash}".encode()


def seal(settings: Settings, source_id: str, content_hash: str, raw: bytes) -> dict[str, object]:
    """The inbox columns (content, kek_id, dek) for ``raw``."""
    s = keys(settings).seal(raw, _aad(source_id, content_hash))
    return {"content": s.ciphertext, "kek_id": s.kek_id, "dek": s.dek}


def unseal(settings: Settings, row: object) -> bytes:
    """The raw bytes of an inbox row (anything with the inbox columns as attributes)."""
    m: Any = getattr(row, "_mapping", row)
    return keys(settings).open(
        m["kek_id"], m["dek"], m["content"], _aad(m["source_id"], m["content_hash"])
    )


def record_key(settings: Settings, system: str, value: str) -> str:
    """A keyed hash of a source record identifier (the record clock's key)."""
    return keys(settings).blind_index("ingest-record", f"{system}|{value}")
