"""Test support for the application API: RSA keys and signed JWTs, local stand-in servers, the app.

- :class:`KeyPair`: an RSA key generated for the session; :meth:`KeyPair.token` signs claims (RS256,
  with its ``kid``), :meth:`KeyPair.jwk` is its public JWK.
- :class:`StandIn`: a tiny HTTP server on 127.0.0.1 (a thread) that records every request and
  answers from a handler; :func:`stripe_standin` imitates the two Stripe endpoints the API calls,
  :func:`jwks_standin` serves a JWKS.
- :func:`api_settings` / :func:`make_app`: the service with the API routes, pointed at them.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import customer, fund, subscribe
from starlette.applications import Starlette

from billingdb import service, stripe_api, webhooks
from billingdb.service import api, auth, generation

PRICE = "price_api_individual"
RETIRED_PRICE = "price_api_retired"
USER = "user_test"
ISSUER = "https://clerk.billingdb.test"
AUDIENCE = "billingdb-api"
WEBHOOK_SECRET = "whsec_api_tests_000000000000000"


@dataclass
class KeyPair:
    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str) -> KeyPair:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public_pem(self) -> str:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def jwk(self) -> dict[str, Any]:
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def claims(self, sub: str | None = "user_test", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now - 5, "nbf": now - 5, "exp": now + 300,
            "azp": "https://app.billingdb.test", "sid": "sess_test",
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, sub: str | None = "user_test", *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        return jwt.encode(self.claims(sub, **claims), self.private_pem, algorithm="RS256",
                          headers={"kid": self.kid, **(headers or {})})

    def bearer(self, sub: str | None = "user_test", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **claims)}"}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        """The form-encoded body (as the stripe library sends it), flattened: ``metadata[user_id]``."""
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


Reply = tuple[int, dict[str, Any] | bytes]


class StandIn:
    """An HTTP server on 127.0.0.1 that records requests and answers with ``handler(recorded)``
    (a body as JSON, or bytes sent as they are)."""

    def __init__(self, handler: Callable[[Recorded], Reply]) -> None:
        self.handler = handler
        self.requests: list[Recorded] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(length))
                outer.requests.append(rec)
                status, body = outer.handler(rec)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{len(outer.requests)}")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [f"{r.method} {r.path.split('?')[0]}" for r in self.requests]


class StripeStandIn(StandIn):
    """POST /v1/customers and POST /v1/checkout/sessions as Stripe answers them; ``fail`` makes one fail."""

    def __init__(self) -> None:
        self.fail: dict[str, Reply] = {}
        self._ids = itertools.count(1)
        super().__init__(self._answer)

    def _answer(self, rec: Recorded) -> Reply:
        path = rec.path.split("?")[0]
        if path in self.fail:
            return self.fail[path]
        n = next(self._ids)
        if rec.method == "POST" and path == "/v1/customers":
            form = rec.form
            return 200, {"id": f"cus_standin{n}", "object": "customer", "email": form.get("email"),
                         "metadata": {"user_id": form.get("metadata[user_id]")}}
        if rec.method == "POST" and path == "/v1/checkout/sessions":
            form = rec.form
            return 200, {"id": f"cs_test_standin{n}", "object": "checkout.session", "mode": form.get("mode"),
                         "customer": form.get("customer"), "client_reference_id": form.get("client_reference_id"),
                         "url": f"https://checkout.stripe.com/c/pay/cs_test_standin{n}"}
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized request URL ({path})"}}


def stripe_error(status: int, message: str, type_: str = "api_error", code: str | None = None) -> Reply:
    return status, {"error": {"type": type_, "message": message, "code": code}}


class JwksStandIn(StandIn):
    """GET /.well-known/jwks.json: the public keys of ``keys``."""

    def __init__(self, *keys: KeyPair) -> None:
        self.keys = list(keys)
        super().__init__(lambda rec: (200, {"keys": [k.jwk() for k in self.keys]}))

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"


def setup_plans(conn: Any) -> None:
    conn.execute("SELECT public.set_plan(%s, 'Individual', 30, amount_cents => 999, currency => 'usd', "
                 "billing_interval => 'month')", (PRICE,))
    conn.execute("SELECT public.set_plan(%s, 'Retired', 10, active => false)", (RETIRED_PRICE,))


def make_subscriber(conn: Any, user_id: str = USER, credits: int = 10, status: str = "active",
                    link_customer: bool = True) -> None:
    """A user with a subscription of ``status`` on PRICE and ``credits`` credits (linked to cus_<user>)."""
    if link_customer:
        customer(conn, user_id)
    subscribe(conn, user_id, status, price_id=PRICE)
    if credits:
        fund(conn, user_id, credits)


def auth_config(key: KeyPair | None = None, jwks_url: str | None = None, **overrides: Any) -> auth.AuthConfig:
    values: dict[str, Any] = {
        "issuer": ISSUER, "audience": (AUDIENCE,),
        "public_key": key.public_pem if key and not jwks_url else None, "jwks_url": jwks_url,
    }
    values.update(overrides)
    return auth.AuthConfig(**values)


def api_settings(
    auth_cfg: auth.AuthConfig,
    stripe_base: str | None,
    generator: Callable[..., Any] = generation.echo,
    hold_ttl: timedelta = timedelta(minutes=5),
) -> api.ApiSettings:
    return api.ApiSettings(
        auth=auth_cfg,
        stripe=stripe_api.StripeConfig("sk_test_standin", api_base=stripe_base, max_network_retries=0, timeout=5)
        if stripe_base else None,
        generation=generation.GenerationConfig(generator=generator, generator_name="tests", hold_ttl=hold_ttl),
    )


def make_app(database_url: str, settings: api.ApiSettings) -> Starlette:
    service_settings = service.ServiceSettings(
        database_url=database_url, webhook=webhooks.WebhookConfig(secrets=(WEBHOOK_SECRET,)), pool_max=8,
    )
    return service.create_app(service_settings, api.routes(settings))


@contextmanager
def uvicorn_server(app: Starlette) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
