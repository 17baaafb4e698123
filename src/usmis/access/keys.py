"""The embedded issuer's signing keys: Ed25519, rotated, each with a ``kid``.

They live in ``data_dir/signing-keys.json`` (mode 600), outside the database, so a copy of
the database cannot mint tokens.  A key signs for ``signing_key_rotation_days``; then a new
key is made and signs, while the old one keeps *verifying* until every token it signed has
expired (rotation period + token lifetime), after which it is dropped.  Several server
processes share the file; changes are made under an exclusive ``flock`` and written
atomically (temp file + rename), so two processes never both rotate.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from usmis.config import Settings

KEY_FILE_NAME = "signing-keys.json"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created: datetime
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_jwk(self) -> dict[str, str]:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        import base64

        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA",
                "use": "sig"}


def _now() -> datetime:
    return datetime.now(UTC)


class KeyRing:
    """The signing keys of the embedded issuer (one file per data dir)."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.data_dir / KEY_FILE_NAME
        self.rotate_after = timedelta(days=settings.signing_key_rotation_days)
        self.verify_after_retire = timedelta(seconds=max(settings.token_ttl_seconds, 86400))
        self._cache: tuple[float, list[SigningKey]] | None = None

    # --- file ------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> list[SigningKey]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return []
        if self._cache and self._cache[0] == mtime:
            return self._cache[1]
        doc = json.loads(self.path.read_text())
        keys = [
            SigningKey(
                kid=k["kid"],
                created=datetime.fromisoformat(k["created"]),
                private=_load_private(k["private_pem"]),
            )
            for k in doc["keys"]
        ]
        self._cache = (mtime, keys)
        return keys

    def _write(self, keys: list[SigningKey]) -> None:
        doc: dict[str, Any] = {
            "keys": [
                {
                    "kid": k.kid,
                    "created": k.created.isoformat(),
                    "private_pem": k.private.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ).decode(),
                }
                for k in keys
            ]
        }
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.path)
        self._cache = None

    # --- use -------------------------------------------------------------------------
    def _usable(self, keys: list[SigningKey], now: datetime) -> list[SigningKey]:
        """Keys that may still verify: not older than rotation + token lifetime margin."""
        return [k for k in keys if now - k.created < self.rotate_after + self.verify_after_retire]

    def active(self) -> SigningKey:
        """The key that signs now; makes (rotates to) a new one when the newest is too old."""
        now = _now()
        keys = self._read()
        if keys and now - keys[-1].created < self.rotate_after:
            return keys[-1]
        with self._locked():
            self._cache = None
            keys = self._read()
            if keys and now - keys[-1].created < self.rotate_after:
                return keys[-1]
            return self._rotate_locked(keys, now)

    def rotate(self) -> SigningKey:
        """Start signing with a fresh key now (old keys keep verifying until they lapse)."""
        with self._locked():
            self._cache = None
            return self._rotate_locked(self._read(), _now())

    def _rotate_locked(self, keys: list[SigningKey], now: datetime) -> SigningKey:
        new = SigningKey(
            kid=f"{now:%Y%m%d%H%M%S}-{secrets.token_hex(4)}",
            created=now,
            private=Ed25519PrivateKey.generate(),
        )
        kept = self._usable(keys, now) + [new]
        self._write(kept)
        return new

    def verification_keys(self) -> dict[str, Ed25519PublicKey]:
        return {k.kid: k.public for k in self._usable(self._read(), _now())}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public keys as a JWK Set (served at ``/auth/jwks.json``)."""
        self.active()
        return {"keys": [k.public_jwk() for k in self._usable(self._read(), _now())]}


def _load_private(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("signing key file holds a key that is not Ed25519")
    return key


def keyring_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE_NAME
