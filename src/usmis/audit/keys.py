"""The audit log's keys: the chain HMAC key and the Ed25519 checkpoint signing key.

They live in ``data_dir/audit-keys.json`` (mode 600), never in the database: whoever can
only change the database can neither forge chain entries nor sign checkpoints.  Losing
this file makes the log unverifiable — back it up with the key-encryption key.
Creation is race-safe across processes (exclusive ``flock``, atomic rename).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from usmis.config import Settings

FILE_NAME = "audit-keys.json"


@dataclass(frozen=True)
class AuditKeys:
    chain_key: bytes
    kid: str
    signing: Ed25519PrivateKey
    public: dict[str, Ed25519PublicKey]  # every kid that ever signed

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.signing.sign(message)).decode()


_CACHE: dict[str, AuditKeys] = {}


def load(settings: Settings) -> AuditKeys:
    cached = _CACHE.get(str(settings.data_dir))  # every append: no filesystem call
    if cached is not None:
        return cached
    path = settings.data_dir / FILE_NAME
    cached = _CACHE.get(str(path.resolve()))
    if cached is not None:
        _CACHE[str(settings.data_dir)] = cached
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                _create(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.close(lock)
    doc = json.loads(path.read_text())
    public: dict[str, Ed25519PublicKey] = {}
    signing: Ed25519PrivateKey | None = None
    kid = ""
    for k in doc["signing"]:
        priv = serialization.load_pem_private_key(k["private_pem"].encode(), password=None)
        assert isinstance(priv, Ed25519PrivateKey)
        public[k["kid"]] = priv.public_key()
        signing, kid = priv, k["kid"]
    assert signing is not None
    keys = AuditKeys(base64.b64decode(doc["chain_key"]), kid, signing, public)
    _CACHE[str(path.resolve())] = _CACHE[str(settings.data_dir)] = keys
    return keys


def _create(path: os.PathLike[str] | str) -> None:
    priv = Ed25519PrivateKey.generate()
    doc = {
        "chain_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "signing": [
            {
                "kid": f"audit-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}",
                "private_pem": priv.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
            }
        ],
    }
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)
