"""Pure parts of the ingest domain: sources, credentials, inbox messages.

Credentials are stored hashed: an API token or MLLP shared secret is a random string of
≥ 128 bits, so a plain SHA-256 is enough (no password stretching needed) and lets us find
and compare it in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

CHANNELS = ("mllp", "rest", "file")
FORMATS = ("hl7v2", "fhir", "csv", "tsv", "json", "ndjson")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_token(source_id: str) -> str:
    """A REST API token: ``src.<source id>.<secret>`` (the id routes, the secret proves)."""
    return f"src.{source_id}.{secrets.token_urlsafe(32)}"


def token_source(token: str) -> str | None:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "src" or not parts[1]:
        return None
    return parts[1]


def credential_matches(presented: str, stored_hash: str | None) -> bool:
    if not stored_hash:
        return False
    return hmac.compare_digest(sha256_hex(presented.encode()), stored_hash)


def peer_allowed(peer_ip: str, allow: list[str]) -> bool:
    """Is the TCP peer in the allow-list (addresses or CIDR networks)?  Empty list: nobody."""
    return _peer_allowed(peer_ip, tuple(allow))


# Asked for every MLLP message: parsing the address and networks was ~4 % of a listener's CPU.
@lru_cache(maxsize=4096)
def _peer_allowed(peer_ip: str, allow: tuple[str, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    for entry in allow:
        try:
            if addr in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


@dataclass
class Source:
    """A source system registered with the hub."""

    id: str
    name: str
    kind: str
    channels: list[str]
    formats: list[str]
    mapping: str | None = None
    token_hash: str | None = None
    mllp_peers: list[str] = field(default_factory=list)
    mllp_secret_hash: str | None = None
    cert_fingerprint: str | None = None
    enabled: bool = True
    created_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        """What listings show: never a credential, only whether one is set."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "channels": self.channels,
            "formats": self.formats,
            "mapping": self.mapping,
            "enabled": self.enabled,
            "has_token": bool(self.token_hash),
            "mllp_peers": self.mllp_peers,
            "has_mllp_secret": bool(self.mllp_secret_hash),
            "has_client_cert": bool(self.cert_fingerprint),
        }


@dataclass
class Incoming:
    """One message as a channel received it, before it is in the inbox."""

    source_id: str
    channel: str
    format: str
    message_id: str
    raw: bytes
    event_time: datetime | None = None
    context: dict[str, Any] | None = None

    @property
    def content_hash(self) -> str:
        return sha256_hex(self.raw)
