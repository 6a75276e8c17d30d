"""Bearer JWTs for the application API: Clerk's session tokens (RS256), verified with PyJWT.

The key is a JWKS URL (Clerk: ``https://<frontend-api>/.well-known/jwks.json``,
fetched and cached by :class:`jwt.PyJWKClient`, the token's ``kid`` picks the
key) or one PEM public key (Clerk's dashboard shows it as the "JWKS public
key"). Every token must be RS256 (no ``none``, no HS256 key confusion), unexpired
(``exp`` required, ``nbf`` honoured, a small leeway for clock skew), issued by
the configured issuer and for the configured audience; Clerk's ``azp``
(authorized party) is checked too when a list is configured. The user is the
token's ``sub``.

:meth:`Authenticator.authenticate` takes the ``Authorization`` header and
returns the user id or raises :class:`AuthError`, whose ``code`` says what was
wrong (missing_token, invalid_scheme, malformed_token, invalid_signature,
token_expired, token_not_yet_valid, invalid_issuer, invalid_audience,
invalid_authorized_party, missing_subject, unknown_key, invalid_algorithm);
the service answers it with 401 and runs nothing else. A JWKS endpoint that
cannot be reached is :class:`AuthUnavailable` (503): the token may be fine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from billingdb.errors import ConfigurationError

__all__ = ["AuthConfig", "AuthError", "AuthUnavailable", "Authenticator", "ENV"]

#: The environment variables :meth:`AuthConfig.from_env` reads.
ENV = {
    "jwks_url": "BILLINGDB_JWT_JWKS_URL",
    "public_key": "BILLINGDB_JWT_PUBLIC_KEY",
    "issuer": "BILLINGDB_JWT_ISSUER",
    "audience": "BILLINGDB_JWT_AUDIENCE",
    "authorized_parties": "BILLINGDB_JWT_AUTHORIZED_PARTIES",
    "leeway": "BILLINGDB_JWT_LEEWAY",
}

ALGORITHMS = ("RS256",)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _read_key(value: str) -> str:
    """A PEM given inline (``-----BEGIN PUBLIC KEY-----...``, ``\\n`` escapes allowed) or as a file path."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.replace("\\n", "\n")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigurationError(f"{ENV['public_key']}: neither a PEM key nor a readable file: {text[:40]!r}")
    return path.read_text()


@dataclass(frozen=True)
class AuthConfig:
    """Where the signing keys come from and what the tokens must say."""

    issuer: str
    audience: tuple[str, ...]
    jwks_url: str | None = None
    public_key: str | None = None
    authorized_parties: tuple[str, ...] = ()
    leeway: float = 5.0
    jwks_cache_seconds: int = 300
    #: Least seconds between two JWKS fetches caused by an unknown ``kid`` (a key
    #: rotation is picked up; a flood of made-up kids does not hammer the issuer).
    jwks_refetch_cooldown: float = 30.0

    def __post_init__(self) -> None:
        if (self.jwks_url is None) == (self.public_key is None):
            raise ConfigurationError(
                f"JWT verification needs exactly one key source: {ENV['jwks_url']} or {ENV['public_key']}"
            )
        if not self.issuer.strip():
            raise ConfigurationError(f"JWT verification needs the issuer ({ENV['issuer']})")
        if not self.audience or any(not a.strip() for a in self.audience):
            raise ConfigurationError(f"JWT verification needs the audience ({ENV['audience']})")
        if self.leeway < 0:
            raise ConfigurationError("the JWT leeway must not be negative")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AuthConfig | None:
        """From ``BILLINGDB_JWT_*`` (``overrides`` win when not None); None when no key source is set."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {name: env.get(var) or None for name, var in ENV.items()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["jwks_url"] is None and values["public_key"] is None:
            return None
        audience = values["audience"]
        parties = values["authorized_parties"]
        return cls(
            issuer=values["issuer"] or "",
            audience=_split(audience) if isinstance(audience, str) else tuple(audience or ()),
            jwks_url=values["jwks_url"],
            public_key=_read_key(values["public_key"]) if values["public_key"] else None,
            authorized_parties=_split(parties) if isinstance(parties, str) else tuple(parties or ()),
            leeway=float(values["leeway"]) if values["leeway"] is not None else 5.0,
        )


class AuthError(Exception):
    """The request carries no acceptable bearer token (answered with 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AuthUnavailable(Exception):
    """The signing keys could not be fetched (answered with 503)."""


@dataclass
class Authenticator:
    """Verifies bearer tokens against one :class:`AuthConfig` (thread-safe; the JWKS is cached)."""

    config: AuthConfig
    _jwks: jwt.PyJWKClient | None = field(default=None, init=False, repr=False)
    _key: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.config.jwks_url:
            options: dict[str, Any] = {"cache_keys": True, "lifespan": self.config.jwks_cache_seconds, "timeout": 10}
            try:
                self._jwks = jwt.PyJWKClient(
                    self.config.jwks_url, cooldown_duration=self.config.jwks_refetch_cooldown, **options
                )
            except TypeError:  # PyJWT before cooldown_duration existed: it refetches on every unknown kid
                self._jwks = jwt.PyJWKClient(self.config.jwks_url, **options)
        else:
            try:
                rsa = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
                self._key = rsa.prepare_key(self.config.public_key or "")
            except (ValueError, TypeError, jwt.InvalidKeyError) as exc:
                raise ConfigurationError(f"{ENV['public_key']} is not an RSA public key: {exc}") from None

    @staticmethod
    def bearer_token(authorization: str | None) -> str:
        """The token of an ``Authorization: Bearer <token>`` header."""
        if authorization is None or not authorization.strip():
            raise AuthError("missing_token", "an Authorization: Bearer <token> header is required")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("invalid_scheme", f"the Authorization scheme must be Bearer, not {scheme[:20]!r}")
        token = token.strip()
        if not token:
            raise AuthError("missing_token", "the Bearer token is empty")
        return token

    def _signing_key(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        try:
            return self._jwks.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthUnavailable(f"the JWKS could not be fetched: {exc}") from None
        except jwt.PyJWKClientError as exc:
            raise AuthError("unknown_key", f"no key of the JWKS matches the token: {exc}") from None
        except jwt.DecodeError as exc:
            raise AuthError("malformed_token", f"the token cannot be decoded: {exc}") from None

    def verify(self, token: str) -> dict[str, Any]:
        """The token's verified claims."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AuthError("malformed_token", f"the token cannot be decoded: {exc}") from None
        if header.get("alg") not in ALGORITHMS:
            raise AuthError("invalid_algorithm", f"the token must be signed with RS256, not {header.get('alg')!r}")
        key = self._signing_key(token)
        cfg = self.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=list(cfg.audience),
                issuer=cfg.issuer,
                leeway=cfg.leeway,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_sub": False},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token_not_yet_valid", "the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid_issuer", "the token was not issued by the configured issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid_audience", "the token is not meant for this API (aud)") from None
        except jwt.MissingRequiredClaimError as exc:
            code = "missing_subject" if exc.claim == "sub" else "missing_claim"
            raise AuthError(code, f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid_signature", "the token's signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("malformed_token", f"the token is not valid: {exc}") from None
        if cfg.authorized_parties and claims.get("azp") not in cfg.authorized_parties:
            raise AuthError("invalid_authorized_party", "the token's azp is not an authorized party")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise AuthError("missing_subject", "the token's sub claim must be a non-empty string")
        return claims

    def authenticate(self, authorization: str | None) -> tuple[str, dict[str, Any]]:
        """(user id, claims) for an ``Authorization`` header, or :class:`AuthError`."""
        claims = self.verify(self.bearer_token(authorization))
        return claims["sub"], claims

    @property
    def audiences(self) -> Sequence[str]:
        return self.config.audience
