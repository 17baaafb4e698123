"""OAuth2 bearer tokens: JWTs signed and verified with PyJWT (no hand-rolled crypto).

Embedded mode: the issuer here signs EdDSA (Ed25519) JWTs with the rotated keys of
:mod:`usmis.access.keys`.  Production mode (``USMIS_OIDC_JWKS_URL`` set): tokens of an
external OpenID Connect provider are verified against its JWKS (EdDSA, ES256 or RS256);
its tokens must carry the same claims (names below), e.g. through the provider's
protocol mappers.

Claims (besides iss, sub, aud, iat, nbf, exp, jti):

    role        one of access.model.Role
    org         the organization id (FHIR Organization id) the principal acts for
    speciality  the clinician's speciality code (optional)
    scope       space-separated SMART v1/v2 scopes
    patient     role patient: the patient's own Patient id
    source      role source: the source system id
    purpose     HL7 v3 PurposeOfUse code (default per role)
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from usmis.access.keys import KeyRing
from usmis.access.model import DEFAULT_SCOPES, Principal, Role, ScopeError, parse_scopes
from usmis.config import Settings
from usmis.kit.errors import Unauthorized

EMBEDDED_ALGORITHMS = ["EdDSA"]
OIDC_ALGORITHMS = ["EdDSA", "ES256", "RS256"]
LEEWAY_SECONDS = 30
VERIFIED_TTL_SECONDS = 60
VERIFIED_MAX = 10_000


def embedded_issuer(settings: Settings) -> str:
    return settings.base_url.rstrip("/") + "/auth"


def issue_token(
    settings: Settings,
    *,
    subject: str,
    role: Role | str,
    org: str | None = None,
    speciality: str | None = None,
    scope: str | None = None,
    patient: str | None = None,
    source: str | None = None,
    purpose: str | None = None,
    ttl_seconds: int | None = None,
    keyring: KeyRing | None = None,
) -> str:
    """Sign a short-lived access token for ``subject`` with the active embedded key."""
    role = Role(role)
    scope = scope if scope is not None else DEFAULT_SCOPES[role]
    parse_scopes(scope)  # refuse to sign what we would refuse to accept
    if role is Role.PATIENT and not patient:
        raise ValueError("a patient token needs the patient's own Patient id")
    if role is Role.SOURCE and not source:
        raise ValueError("a source-system token needs its source id")
    if role is Role.CLINICIAN and not org:
        raise ValueError("a clinician token needs an organization")
    key = (keyring or KeyRing(settings)).active()
    now = datetime.now(UTC)
    ttl = ttl_seconds if ttl_seconds is not None else settings.token_ttl_seconds
    claims: dict[str, Any] = {
        "iss": embedded_issuer(settings),
        "sub": subject,
        "aud": settings.token_audience,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=ttl),
        "jti": secrets.token_hex(12),
        "role": role.value,
        "scope": scope,
    }
    for name, value in (("org", org), ("speciality", speciality), ("patient", patient),
                        ("source", source), ("purpose", purpose)):
        if value:
            claims[name] = value
    return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid})


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Build a Principal from verified claims; every failure is a 401, never a 500."""
    try:
        role = Role(str(claims.get("role", "")))
    except ValueError:
        raise Unauthorized("token carries no valid role claim") from None
    try:
        scopes = parse_scopes(str(claims.get("scope", "")))
    except ScopeError as exc:
        raise Unauthorized(f"token scope is invalid: {exc}") from None
    patient = _opt(claims, "patient")
    source = _opt(claims, "source")
    org = _opt(claims, "org")
    if role is Role.PATIENT and not patient:
        raise Unauthorized("patient token lacks the patient claim")
    if role is Role.SOURCE and not source:
        raise Unauthorized("source-system token lacks the source claim")
    if role is Role.CLINICIAN and not org:
        raise Unauthorized("clinician token lacks the org claim")
    exp = claims.get("exp")
    return Principal(
        subject=str(claims.get("sub", "")),
        role=role,
        organization_id=org,
        speciality=_opt(claims, "speciality"),
        scopes=scopes,
        patient_id=patient,
        source_id=source,
        purpose_of_use=_opt(claims, "purpose"),
        token_id=_opt(claims, "jti"),
        expires_at=datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None,
        issuer=_opt(claims, "iss"),
    )


def _opt(claims: dict[str, Any], name: str) -> str | None:
    v = claims.get(name)
    return str(v) if v not in (None, "") else None


class TokenVerifier:
    """Verifies bearer tokens: embedded keys, or an external provider's JWKS."""

    def __init__(self, settings: Settings, *, jwks_cooldown_seconds: float = 10.0) -> None:
        self.settings = settings
        self.external = bool(settings.oidc_jwks_url)
        self._keyring = KeyRing(settings)
        # Tokens already verified: a client sends the same one with every request, and an
        # Ed25519 verification costs ~0.1 ms.  A hit still checks expiry and, for embedded
        # tokens, that the signing key is still a current one; after VERIFIED_TTL_SECONDS
        # the signature is checked again.
        self._verified: dict[str, tuple[Principal, float, str, float]] = {}
        self._jwks: jwt.PyJWKClient | None = None
        if self.external:
            # PyJWKClient caches the key set and refetches on an unknown kid (the provider
            # rotated its key) at most once per cooldown, so random kids cannot flood it.
            self._jwks = jwt.PyJWKClient(
                settings.oidc_jwks_url,
                cache_keys=True,
                lifespan=300,
                cooldown_duration=jwks_cooldown_seconds,
            )

    def verify(self, token: str) -> Principal:
        if not token:
            raise Unauthorized("a bearer token is required")
        kept = self.kept(token)
        if kept is not None:
            return kept
        principal, exp, kid = self._verify(token)
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = (principal, exp, kid, time.time())
        return principal

    def kept(self, token: str) -> Principal | None:
        """The principal of ``token`` if it was verified lately and is still good, without
        checking its signature again; None if it must be verified; ``Unauthorized`` if
        it was kept and has expired since."""
        hit = self._verified.get(token)
        if hit is not None:
            principal, exp, kid, at = hit
            now = time.time()
            if now > exp + LEEWAY_SECONDS:
                self._verified.pop(token, None)
                raise Unauthorized("bearer token has expired")
            if now - at < VERIFIED_TTL_SECONDS and (
                    self._jwks is not None or kid in self._keyring.verification_keys()):
                return principal
            self._verified.pop(token, None)
        return None

    def _verify(self, token: str) -> tuple[Principal, float, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("bearer token is malformed") from None
        kid = header.get("kid")
        options = {"require": ["exp", "iat", "sub"]}
        try:
            if self._jwks is not None:
                key: Any = self._jwks.get_signing_key_from_jwt(token).key
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=OIDC_ALGORITHMS,
                    audience=self.settings.oidc_audience or self.settings.token_audience,
                    issuer=self.settings.oidc_issuer or None,
                    leeway=LEEWAY_SECONDS,
                    options=options,  # type: ignore[arg-type]
                )
            else:
                keys = self._keyring.verification_keys()
                if not isinstance(kid, str) or kid not in keys:
                    raise Unauthorized("token was not signed by a current key")
                claims = jwt.decode(
                    token,
                    keys[kid],
                    algorithms=EMBEDDED_ALGORITHMS,
                    audience=self.settings.token_audience,
                    issuer=embedded_issuer(self.settings),
                    leeway=LEEWAY_SECONDS,
                    options=options,  # type: ignore[arg-type]
                )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("bearer token has expired") from None
        except jwt.PyJWKClientError:
            raise Unauthorized("token was not signed by a key of the identity provider") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"bearer token is invalid ({type(exc).__name__})") from None
        return principal_from_claims(claims), float(claims["exp"]), str(kid)
