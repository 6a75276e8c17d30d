"""Bearer JWT checks of the application API: every way a token can be wrong is a 401 that runs nothing.

Tokens are signed here with an RSA key generated for the session; the API trusts
its PEM public key, or a JWKS served by a local stand-in on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from api_support import (
    AUDIENCE,
    ISSUER,
    PRICE,
    USER,
    JwksStandIn,
    KeyPair,
    api_settings,
    auth_config,
    make_app,
    make_subscriber,
)
from helpers import contents
from starlette.testclient import TestClient

from billingdb import service, webhooks
from billingdb.errors import ConfigurationError
from billingdb.service import api, auth

ROUTES = [
    ("POST", "/stripe/checkout/session",
     {"price_id": PRICE, "success_url": "https://app.test/ok", "cancel_url": "https://app.test/cancel"}),
    ("GET", "/stripe/subscription/state", None),
    ("POST", "/stories/generate-with-credits", {"title": "T", "prompt": "A story", "includeImage": True}),
]
route_ids = [f"{m} {p}" for m, p, _ in ROUTES]


def _request(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.request(method, path, json=body, headers=headers)


def _bad_headers(key: KeyPair, other: KeyPair) -> list[tuple[str, dict[str, str], str]]:
    """(case, headers, expected error code)."""
    now = int(time.time())
    token = key.token

    def bearer(t: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {t}"}

    hs256 = _hs256_with_public_key(key)
    unsigned = jwt.encode(key.claims(), None, algorithm="none")
    return [
        ("missing header", {}, "missing_token"),
        ("empty header", {"Authorization": ""}, "missing_token"),
        ("bearer without token", {"Authorization": "Bearer "}, "missing_token"),
        ("wrong scheme", {"Authorization": f"Basic {token()}"}, "invalid_scheme"),
        ("token without scheme", {"Authorization": token()}, "invalid_scheme"),
        ("not a jwt", bearer("not.a.jwt"), "malformed_token"),
        ("garbage", bearer("abc"), "malformed_token"),
        ("bad signature", bearer(other.token(headers={"kid": key.kid})), "invalid_signature"),
        ("tampered payload", bearer(_tamper(token())), "invalid_signature"),
        ("expired", bearer(token(exp=now - 60, iat=now - 400, nbf=now - 400)), "token_expired"),
        ("not yet valid", bearer(token(nbf=now + 600)), "token_not_yet_valid"),
        ("wrong issuer", bearer(token(iss="https://evil.test")), "invalid_issuer"),
        ("no issuer", bearer(token(iss=None)), "missing_claim"),
        ("wrong audience", bearer(token(aud="another-api")), "invalid_audience"),
        ("no audience", bearer(token(aud=None)), "missing_claim"),
        ("no expiry", bearer(token(exp=None)), "missing_claim"),
        ("no sub", bearer(token(None)), "missing_subject"),
        ("empty sub", bearer(token("  ")), "missing_subject"),
        ("sub not a string", bearer(token(12345)), "missing_subject"),
        ("HS256 with the public key", bearer(hs256), "invalid_algorithm"),
        ("alg none", bearer(unsigned), "invalid_algorithm"),
    ]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key(key: KeyPair) -> str:
    """The classic key-confusion forgery: HS256 with the RSA public key as the HMAC secret."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = _b64(json.dumps(key.claims()).encode())
    mac = hmac.new(key.public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["sub"] = "user_someone_else"
    forged = _b64(json.dumps(claims).encode())
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=route_ids)
def test_every_bad_token_is_401_and_runs_nothing(  # type: ignore[no-untyped-def]
    api_client, api_db, stripe_api, signing_key, other_key, method, path, body
) -> None:
    make_subscriber(api_db)
    before = contents(api_db)
    for case, headers, code in _bad_headers(signing_key, other_key):
        r = _request(api_client, method, path, body, headers)
        assert r.status_code == 401, (case, r.status_code, r.text)
        assert r.headers["content-type"] == "application/json", case
        assert r.json()["error"] == code, (case, r.json())
        assert r.json()["message"], case
        assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"'), case
    # Nothing ran: no row changed, Stripe was not called.
    assert contents(api_db) == before
    assert stripe_api.requests == []


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=route_ids)
def test_a_good_token_gets_through(api_client, api_db, signing_key, method, path, body) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db)
    r = _request(api_client, method, path, body, signing_key.bearer(USER))
    assert r.status_code == 200, r.text


def test_unauthenticated_routes_stay_open(api_client) -> None:  # type: ignore[no-untyped-def]
    assert api_client.get("/healthz").status_code == 200
    assert api_client.get("/openapi.json").status_code == 200
    # The webhook keeps its own check (the Stripe signature), not a bearer token.
    assert api_client.post("/stripe/webhook", content=b"{}").json()["error"] == "missing_signature"


def test_authorized_parties(database_url, api_db, signing_key, stripe_api) -> None:  # type: ignore[no-untyped-def]
    cfg = auth_config(signing_key, authorized_parties=("https://app.billingdb.test",))
    with TestClient(make_app(database_url, api_settings(cfg, stripe_api.url))) as client:
        ok = client.get("/stripe/subscription/state", headers=signing_key.bearer(USER))
        assert ok.status_code == 200
        bad = client.get("/stripe/subscription/state", headers=signing_key.bearer(USER, azp="https://evil.test"))
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_authorized_party"
        none = client.get("/stripe/subscription/state", headers=signing_key.bearer(USER, azp=None))
        assert none.status_code == 401


def test_several_audiences(database_url, api_db, signing_key, stripe_api) -> None:  # type: ignore[no-untyped-def]
    cfg = auth_config(signing_key, audience=(AUDIENCE, "second-api"))
    with TestClient(make_app(database_url, api_settings(cfg, stripe_api.url))) as client:
        for aud in (AUDIENCE, "second-api", ["x", "second-api"]):
            r = client.get("/stripe/subscription/state", headers=signing_key.bearer(USER, aud=aud))
            assert r.status_code == 200, aud


# -- JWKS from a local stand-in ------------------------------------------------------------------


@pytest.fixture
def jwks(signing_key: KeyPair) -> Iterator[JwksStandIn]:
    with JwksStandIn(signing_key) as standin:
        yield standin


@pytest.fixture
def jwks_client(database_url, api_db, jwks, stripe_api) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    cfg = auth_config(jwks_url=jwks.jwks_url, jwks_refetch_cooldown=0)
    with TestClient(make_app(database_url, api_settings(cfg, stripe_api.url))) as client:
        yield client


def test_jwks_verifies_and_is_cached(jwks_client, jwks, signing_key) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        r = jwks_client.get("/stripe/subscription/state", headers=signing_key.bearer("user_jwks"))
        assert r.status_code == 200 and r.json()["user_id"] == "user_jwks"
    assert jwks.paths() == ["GET /.well-known/jwks.json"]


def test_jwks_unknown_kid_is_401(jwks_client, jwks, other_key) -> None:  # type: ignore[no-untyped-def]
    r = jwks_client.get("/stripe/subscription/state", headers=other_key.bearer())
    assert r.status_code == 401 and r.json()["error"] == "unknown_key"
    no_kid = jwt.encode(other_key.claims(), other_key.private_pem, algorithm="RS256")
    r = jwks_client.get("/stripe/subscription/state", headers={"Authorization": f"Bearer {no_kid}"})
    assert r.status_code == 401 and r.json()["error"] in ("unknown_key", "invalid_signature")


def test_jwks_bad_signature_under_a_known_kid(jwks_client, signing_key, other_key) -> None:  # type: ignore[no-untyped-def]
    forged = other_key.token(headers={"kid": signing_key.kid})
    r = jwks_client.get("/stripe/subscription/state", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_signature"


def test_jwks_key_rotation(jwks_client, jwks, signing_key) -> None:  # type: ignore[no-untyped-def]
    assert jwks_client.get("/stripe/subscription/state", headers=signing_key.bearer()).status_code == 200
    rotated = KeyPair.generate("kid-rotated")
    jwks.keys.append(rotated)
    # A kid not in the cached set makes the client fetch the JWKS again.
    r = jwks_client.get("/stripe/subscription/state", headers=rotated.bearer())
    assert r.status_code == 200, r.text


def test_jwks_unreachable_is_503(database_url, api_db, signing_key, stripe_api) -> None:  # type: ignore[no-untyped-def]
    with JwksStandIn(signing_key) as gone:
        url = gone.jwks_url
    app = make_app(database_url, api_settings(auth_config(jwks_url=url), stripe_api.url))
    with TestClient(app) as client:
        r = client.get("/stripe/subscription/state", headers=signing_key.bearer())
        assert r.status_code == 503 and r.json()["error"] == "auth_unavailable"
        # A request without a token is still a plain 401.
        assert client.get("/stripe/subscription/state").status_code == 401


# -- configuration ------------------------------------------------------------------------------


def test_auth_config_from_env(signing_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert auth.AuthConfig.from_env({}) is None
    pem_file = tmp_path / "clerk.pem"
    pem_file.write_text(signing_key.public_pem)
    env = {"BILLINGDB_JWT_PUBLIC_KEY": str(pem_file), "BILLINGDB_JWT_ISSUER": ISSUER,
           "BILLINGDB_JWT_AUDIENCE": f"{AUDIENCE}, other", "BILLINGDB_JWT_AUTHORIZED_PARTIES": "https://a.test,https://app.billingdb.test"}
    cfg = auth.AuthConfig.from_env(env)
    assert cfg is not None and cfg.audience == (AUDIENCE, "other") and cfg.authorized_parties == ("https://a.test", "https://app.billingdb.test")
    assert cfg.public_key == signing_key.public_pem
    # Inline PEM with escaped newlines (as in a .env file), and an override.
    inline = signing_key.public_pem.replace("\n", "\\n")
    cfg = auth.AuthConfig.from_env({**env, "BILLINGDB_JWT_PUBLIC_KEY": inline}, issuer="https://other.test")
    assert cfg is not None and cfg.issuer == "https://other.test" and cfg.public_key.startswith("-----BEGIN")
    user, claims = auth.Authenticator(auth.AuthConfig.from_env(env)).authenticate(  # type: ignore[arg-type]
        f"Bearer {signing_key.token('user_env', aud='other')}"
    )
    assert user == "user_env" and claims["aud"] == "other"


@pytest.mark.parametrize(
    "env",
    [
        {"BILLINGDB_JWT_JWKS_URL": "http://127.0.0.1:1/jwks", "BILLINGDB_JWT_AUDIENCE": AUDIENCE},
        {"BILLINGDB_JWT_JWKS_URL": "http://127.0.0.1:1/jwks", "BILLINGDB_JWT_ISSUER": ISSUER},
        {"BILLINGDB_JWT_JWKS_URL": "http://127.0.0.1:1/jwks", "BILLINGDB_JWT_PUBLIC_KEY": "-----BEGIN x",
         "BILLINGDB_JWT_ISSUER": ISSUER, "BILLINGDB_JWT_AUDIENCE": AUDIENCE},
        {"BILLINGDB_JWT_PUBLIC_KEY": "/does/not/exist.pem", "BILLINGDB_JWT_ISSUER": ISSUER,
         "BILLINGDB_JWT_AUDIENCE": AUDIENCE},
    ],
    ids=["no issuer", "no audience", "two key sources", "missing key file"],
)

def test_auth_config_refuses_incomplete_settings(env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError):
        auth.AuthConfig.from_env(env)


def test_a_pem_that_is_not_an_rsa_key_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        auth.Authenticator(auth.AuthConfig(issuer=ISSUER, audience=(AUDIENCE,),
                                           public_key="-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"))


def test_the_state_route_with_the_database_down_is_503_and_a_bad_token_still_401(signing_key) -> None:  # type: ignore[no-untyped-def]
    """The state route verifies the token and reads the state in one worker-thread hand-off: a bad token
    is refused before the database is asked, an unreachable database is a 503 Stripe-style error, no 500."""
    settings = service.ServiceSettings(
        database_url="postgresql://nobody@127.0.0.1:1/unreachable",
        webhook=webhooks.WebhookConfig(secrets=("whsec_test",)),
        health_timeout=0.5,
        pool_timeout=0.5,
    )
    app = service.create_app(settings, api.routes(api_settings(auth_config(signing_key), None)))
    with TestClient(app) as client:
        r = client.get("/stripe/subscription/state", headers=signing_key.bearer())
        assert r.status_code == 503 and r.json()["error"] == "database_unavailable", r.text
        r = client.get("/stripe/subscription/state", headers={"Authorization": "Bearer not.a.jwt"})
        assert r.status_code == 401 and r.json()["error"] == "malformed_token"
