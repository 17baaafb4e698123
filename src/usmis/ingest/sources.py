"""The source registry: who may deliver data, through which channel, with which credential.

Data from an unknown or disabled source is refused at the channel, before the inbox.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection

from usmis.ingest import repository as repo
from usmis.ingest.model import (
    CHANNELS,
    FORMATS,
    Source,
    credential_matches,
    new_token,
    peer_allowed,
    sha256_hex,
    token_source,
)
from usmis.kit.errors import BadRequest, Forbidden, NotFound, Unauthorized


@dataclass
class Credentials:
    """What ``sources add`` hands out once; only hashes are kept."""

    token: str | None = None
    mllp_secret: str | None = None


def add_source(
    conn: Connection,
    *,
    source_id: str,
    name: str,
    kind: str,
    channels: list[str],
    formats: list[str],
    mapping: str | None = None,
    mllp_peers: list[str] | None = None,
    mllp_secret: str | None = None,
    new_mllp_secret: bool = False,
    token: str | None = None,
    cert_fingerprint: str | None = None,
) -> Credentials:
    """Register (or re-register) a source.  A REST source gets a fresh API token."""
    if not source_id or not source_id.replace("-", "").replace("_", "").isalnum():
        raise BadRequest("source id must be letters, digits, '-' or '_'", expression=["id"])
    bad = [c for c in channels if c not in CHANNELS]
    if bad:
        raise BadRequest(f"unknown channel {bad[0]!r}", expression=["channels"])
    badf = [f for f in formats if f not in FORMATS]
    if badf:
        raise BadRequest(f"unknown format {badf[0]!r}", expression=["formats"])
    creds = Credentials()
    if "rest" in channels:
        creds.token = token or new_token(source_id)
    if new_mllp_secret and not mllp_secret:
        mllp_secret = secrets.token_urlsafe(24)
    creds.mllp_secret = mllp_secret
    repo.upsert_source(conn, Source(
        id=source_id, name=name, kind=kind, channels=channels, formats=formats,
        mapping=mapping,
        token_hash=sha256_hex(creds.token.encode()) if creds.token else None,
        mllp_peers=mllp_peers if mllp_peers is not None else (
            ["127.0.0.1", "::1"] if "mllp" in channels else []),
        mllp_secret_hash=sha256_hex(mllp_secret.encode()) if mllp_secret else None,
        cert_fingerprint=cert_fingerprint.lower().replace(":", "") if cert_fingerprint else None,
        enabled=True,
    ))
    return creds


def reissue_token(conn: Connection, source_id: str) -> str:
    """A new REST API token for a source (the old one stops working); nothing else of
    its registration changes."""
    token = new_token(source_id)
    if not repo.set_source_token_hash(conn, source_id, sha256_hex(token.encode())):
        raise NotFound(f"unknown source {source_id!r}")
    return token


def get(conn: Connection, source_id: str) -> Source:
    s = repo.get_source(conn, source_id)
    if s is None:
        raise NotFound(f"unknown source {source_id!r}")
    return s


def list_all(conn: Connection) -> list[Source]:
    return repo.list_sources(conn)


def set_enabled(conn: Connection, source_id: str, enabled: bool) -> None:
    if not repo.set_source_enabled(conn, source_id, enabled):
        raise NotFound(f"unknown source {source_id!r}")


def usable(conn: Connection, source_id: str, channel: str) -> Source:
    """The source, if it exists, is enabled and may use ``channel``; else Forbidden."""
    s = repo.get_source(conn, source_id)
    if s is None or not s.enabled:
        raise Forbidden("unknown or disabled source")
    if channel not in s.channels:
        raise Forbidden(f"source may not use the {channel} channel")
    return s


def authenticate_token(conn: Connection, token: str) -> Source:
    """REST: the bearer token names its source; the hash must match and the source be live."""
    sid = token_source(token)
    if sid is None:
        raise Unauthorized("not a source token")
    s = repo.get_source(conn, sid)
    if s is None or not credential_matches(token, s.token_hash):
        raise Unauthorized("invalid source token")
    if not s.enabled or "rest" not in s.channels:
        raise Forbidden("source is disabled or may not use REST")
    return s


def authorise_mllp(
    s: Source | None, *, peer_ip: str, secret: str, cert_fingerprint: str | None
) -> str | None:
    """Why an MLLP message must be refused, or None when the source may send it.

    The peer must be on the allow-list, and if the source has a shared secret (sent in
    MSH-8) or a client certificate registered, it must be presented.
    """
    if s is None or not s.enabled:
        return "unknown or disabled source"
    if "mllp" not in s.channels:
        return "source may not use MLLP"
    if not peer_allowed(peer_ip, s.mllp_peers):
        return "peer address not on the source's allow-list"
    if s.cert_fingerprint and cert_fingerprint != s.cert_fingerprint:
        return "client certificate does not match the source"
    if s.mllp_secret_hash and not credential_matches(secret, s.mllp_secret_hash):
        return "shared secret (MSH-8) missing or wrong"
    return None
