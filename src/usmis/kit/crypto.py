"""Envelope encryption and blind indexes: why a copy of the database reveals nobody.

Every sensitive record is sealed with AES-256-GCM under its own random *data key* (DEK).
The DEK is stored beside the ciphertext, itself encrypted ("wrapped") with AES-256-GCM
under a *key-encryption key* (KEK) that never enters the database: it comes from a
:class:`KeyProvider` — a local key file by default (created on first run, mode 600), a
KMS in production.  Each wrapped DEK carries the id of the KEK that wrapped it, so
``usmis keys rotate`` can add a new KEK and re-wrap every DEK while servers keep serving
(they re-read the key file when they meet an unknown KEK id, and at most every
:data:`RELOAD_SECONDS` to pick up a new current KEK).

Exact search over encrypted values uses *blind indexes*: HMAC-SHA256 of a normalised value
under a key derived (HKDF) from an index master key, a different key per ``purpose``
(``"patient.identifier"``, ``"patient.phone"``, …), so equal values in different fields do
not produce comparable digests.  The index master key is not rotated by KEK rotation
(rotating it means recomputing every index).

Sealed layouts: ``body = nonce(12) || ciphertext+tag``; ``dek = nonce(12) || wrapped+tag``.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from usmis.kit.errors import UsmisError

RELOAD_SECONDS = 1.0
_NONCE = 12
_WRAP_AAD = b"usmis-dek-v1"
_INDEX_BYTES = 16  # 128-bit truncated HMAC: collision-free at national scale, half the size


class KeyUnavailable(UsmisError):
    """A KEK named by a row is not available: the key file or KMS lacks it."""

    code = "security"


class KeyProvider(Protocol):
    """Where key-encryption keys and the index master key live (file, KMS, HSM)."""

    def current_kek_id(self) -> str: ...

    def kek(self, kek_id: str) -> bytes:
        """The 32-byte KEK ``kek_id``; raises :class:`KeyUnavailable` when unknown."""
        ...

    def index_master_key(self) -> bytes: ...

    def kek_ids(self) -> list[str]: ...


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _new_kek_id() -> str:
    return f"kek-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


class LocalKeyFile:
    """KEKs in a JSON file outside the database (mode 600), created on first use.

    Layout: ``{"current": id, "keks": {id: b64}, "retired": [ids], "index_key": b64}``.
    Retired KEKs no longer wrap anything new but still unwrap until purged.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._mtime = 0.0
        self._data: dict[str, object] = {}
        self._ensure()
        self._load()

    # -- file handling -------------------------------------------------------------
    def _ensure(self) -> None:
        if self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kid = _new_kek_id()
        data = {
            "current": kid,
            "keks": {kid: _b64(secrets.token_bytes(32))},
            "retired": [],
            "index_key": _b64(secrets.token_bytes(32)),
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        try:
            # link() fails if another process created the file first: theirs wins, whole.
            os.link(tmp, self.path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)

    def _load(self) -> None:
        st = self.path.stat()
        with self.path.open() as fh:
            self._data = json.load(fh)
        self._mtime = st.st_mtime
        self._loaded_at = time.monotonic()

    def _maybe_reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._loaded_at < RELOAD_SECONDS:
            return
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
            except FileNotFoundError:
                return
            if force or mtime != self._mtime:
                self._load()
            self._loaded_at = now

    def _write(self, data: dict[str, object]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._load()

    # -- KeyProvider ---------------------------------------------------------------
    def current_kek_id(self) -> str:
        self._maybe_reload()
        return str(self._data["current"])

    def kek(self, kek_id: str) -> bytes:
        keks = self._keks()
        if kek_id not in keks:
            self._maybe_reload(force=True)
            keks = self._keks()
            if kek_id not in keks:
                raise KeyUnavailable(f"key-encryption key {kek_id} is not available")
        return base64.b64decode(keks[kek_id])

    def kek_ids(self) -> list[str]:
        return list(self._keks())

    def index_master_key(self) -> bytes:
        return base64.b64decode(str(self._data["index_key"]))

    def _keks(self) -> dict[str, str]:
        keks = self._data["keks"]
        assert isinstance(keks, dict)
        return keks

    # -- administration (usmis keys rotate) ---------------------------------------
    def add_kek(self) -> str:
        """Make a new KEK current; the old ones become retired (still unwrap)."""
        self._maybe_reload(force=True)
        data = dict(self._data)
        keks = dict(self._keks())
        old = str(data["current"])
        kid = _new_kek_id()
        keks[kid] = _b64(secrets.token_bytes(32))
        data["keks"] = keks
        data["current"] = kid
        retired = [str(r) for r in data.get("retired", []) or []]  # type: ignore[attr-defined]
        data["retired"] = sorted({*retired, old})
        self._write(data)
        return kid

    def purge(self, kek_ids: list[str]) -> None:
        """Forget retired KEKs (only after no row is wrapped under them any more)."""
        self._maybe_reload(force=True)
        data = dict(self._data)
        cur = str(data["current"])
        keks = {k: v for k, v in self._keks().items() if k == cur or k not in kek_ids}
        data["keks"] = keks
        data["retired"] = [k for k in keks if k != cur]
        self._write(data)


class InMemoryKeys:
    """A fake :class:`KeyProvider` for pure unit tests (no file)."""

    def __init__(self) -> None:
        self._current = "kek-mem-1"
        self._keks = {self._current: secrets.token_bytes(32)}
        self._index = secrets.token_bytes(32)

    def current_kek_id(self) -> str:
        return self._current

    def kek(self, kek_id: str) -> bytes:
        try:
            return self._keks[kek_id]
        except KeyError:
            raise KeyUnavailable(f"key-encryption key {kek_id} is not available") from None

    def kek_ids(self) -> list[str]:
        return list(self._keks)

    def index_master_key(self) -> bytes:
        return self._index

    def add_kek(self) -> str:
        self._current = f"kek-mem-{len(self._keks) + 1}"
        self._keks[self._current] = secrets.token_bytes(32)
        return self._current


@dataclass(frozen=True, slots=True)
class Sealed:
    """One sealed record: what goes into the ``kek_id``, ``dek`` and body columns."""

    kek_id: str
    dek: bytes
    ciphertext: bytes

    def __repr__(self) -> str:  # never show key material
        return f"Sealed(kek_id={self.kek_id!r}, {len(self.ciphertext)} bytes)"


class Keyring:
    """Seals/opens records and computes blind indexes over a :class:`KeyProvider`."""

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider
        self._kek_aead: dict[str, AESGCM] = {}
        self._index_keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "Keyring(<keys hidden>)"

    def _aead_for(self, kek_id: str) -> AESGCM:
        aead = self._kek_aead.get(kek_id)
        if aead is None:
            aead = AESGCM(self.provider.kek(kek_id))
            self._kek_aead[kek_id] = aead
        return aead

    # -- envelope ------------------------------------------------------------------
    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        """Encrypt under a fresh DEK; ``aad`` binds the ciphertext to its row (type/id)."""
        dek = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(_NONCE)
        ct = nonce + AESGCM(dek).encrypt(nonce, plaintext, aad)
        kek_id = self.provider.current_kek_id()
        return Sealed(kek_id, self.wrap(kek_id, dek), ct)

    def open(self, kek_id: str, dek: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        key = self.unwrap(kek_id, dek)
        return AESGCM(key).decrypt(ciphertext[:_NONCE], ciphertext[_NONCE:], aad)

    def wrap(self, kek_id: str, dek: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead_for(kek_id).encrypt(nonce, dek, _WRAP_AAD)

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        return self._aead_for(kek_id).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_AAD)

    def rewrap(self, kek_id: str, wrapped: bytes, new_kek_id: str) -> bytes:
        """The same DEK wrapped under ``new_kek_id`` (the body is not touched)."""
        return self.wrap(new_kek_id, self.unwrap(kek_id, wrapped))

    # -- blind indexes -------------------------------------------------------------
    def index_key(self, purpose: str) -> bytes:
        key = self._index_keys.get(purpose)
        if key is None:
            key = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=b"usmis-blind-index-v1",
                info=purpose.encode(),
            ).derive(self.provider.index_master_key())
            self._index_keys[purpose] = key
        return key

    def blind_index(self, purpose: str, value: str) -> str:
        """Keyed HMAC of ``value`` (NFKC, trimmed) for ``purpose``: 32 hex characters.

        Callers normalise further where the domain says equal (case-folding names,
        digits-only phones); equal inputs always give equal digests for one purpose.
        """
        norm = unicodedata.normalize("NFKC", value).strip()
        mac = hmac.digest(self.index_key(purpose), norm.encode(), "sha256")  # one C call
        return mac[:_INDEX_BYTES].hex()


_keyrings: dict[Path, Keyring] = {}
_keyrings_lock = threading.Lock()


def keyring_for(key_file: Path) -> Keyring:
    """The process-wide :class:`Keyring` over the local key file (created on first use)."""
    # Hot path: no filesystem call for an absolute path seen before (a relative one depends
    # on the working directory, so it is resolved every time).
    ring = _keyrings.get(key_file) if key_file.is_absolute() else None
    if ring is not None:
        return ring
    path = key_file.resolve()
    with _keyrings_lock:
        ring = _keyrings.get(path)
        if ring is None:
            ring = Keyring(LocalKeyFile(path))
            _keyrings[path] = ring
        if key_file.is_absolute():
            _keyrings[key_file] = ring
        return ring
