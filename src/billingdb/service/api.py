"""The application API: the seed's three Zuplo routes on the same service as the webhook intake.

- ``POST /stripe/checkout/session``: a Stripe Checkout Session for an active
  plan (:mod:`billingdb.checkout`);
- ``GET /stripe/subscription/state``: ``get_user_subscription_state`` of the caller;
- ``POST /stories/generate-with-credits``: the credit-gated generation with a
  credit hold around it (:mod:`billingdb.service.generation`);
- ``GET /openapi.json``: the OpenAPI document below, kept next to the routes it describes.

Every route of the API needs ``Authorization: Bearer <Clerk JWT>``
(:mod:`billingdb.auth`): a missing or bad token is answered 401 with a JSON
error before anything else runs; the user is the token's ``sub``. Errors are
JSON ``{"error": code, "message": text, ...}``.

:func:`routes` builds the routes for :func:`billingdb.service.create_app`,
which shares its connection pool (``request.app.state.pool``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from billingdb import stripe_api
from billingdb.client import BillingClient
from billingdb.errors import DatabaseUnavailable, InvalidArgument, first_line
from billingdb.jsonbody import BodyRefused, parse_json
from billingdb.service import auth, checkout, generation

__all__ = ["ApiSettings", "OPENAPI", "openapi_document", "routes"]

log = logging.getLogger("billingdb.api")

MAX_BODY = 64 * 1024
MAX_IDEMPOTENCY_KEY = 255

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class ApiSettings:
    """What the application API needs besides the database: token checks, Stripe, the generator."""

    auth: auth.AuthConfig
    stripe: stripe_api.StripeConfig | None = None
    generation: generation.GenerationConfig = field(default_factory=generation.GenerationConfig)


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = None
    if status == 401:
        # RFC 6750: say that a bearer token is wanted, and why this one was not taken.
        description = message.replace('"', "'")
        headers = {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'}
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


async def _json_body(request: Request) -> Any:
    """The parsed JSON body (at most MAX_BODY bytes); ValueError with a message otherwise."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise OverflowError(f"the body exceeds {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise OverflowError(f"the body exceeds {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        return parse_json(b"".join(chunks) or b"null")
    except BodyRefused as exc:  # the API's code for every bad body is invalid_request; the message says why
        raise ValueError(str(exc)) from None


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValueError(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    return key


def _authenticated(authenticator: auth.Authenticator, handler: Handler | None = None, *,
                   read: Callable[[Request, str], Any] | None = None) -> Handler:
    """Run ``handler`` only for a request with a valid bearer token (request.state.user_id, .claims).

    A route that only reads passes ``read(request, user_id)`` instead: it runs in the same worker
    thread as the token's verification, one hand-off instead of two, and its value is the JSON answer.
    """
    if (handler is None) == (read is None):
        raise TypeError("_authenticated takes a handler or a read, not both")

    def verify_and_read(request: Request, authorization: str | None) -> Any:
        assert read is not None
        user_id, _ = authenticator.authenticate(authorization)
        return read(request, user_id)

    async def endpoint(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        try:
            if read is not None:
                return JSONResponse(await run_in_threadpool(verify_and_read, request, authorization))
            assert handler is not None
            request.state.user_id, request.state.claims = await run_in_threadpool(
                authenticator.authenticate, authorization
            )
            return await handler(request)
        except auth.AuthError as exc:
            return _error(401, exc.code, str(exc))
        except auth.AuthUnavailable as exc:
            log.error("JWT keys unavailable: %s", exc)
            return _error(503, "auth_unavailable", str(exc))
        except (DatabaseUnavailable, psycopg.OperationalError) as exc:
            log.error("%s %s: database unavailable: %s", request.method, request.url.path, exc)
            return _error(503, "database_unavailable", first_line(exc))
        except InvalidArgument as exc:
            return _error(400, "invalid_request", first_line(exc), sqlstate=exc.sqlstate)

    named = read if read is not None else handler
    endpoint.__name__ = named.__name__
    endpoint.__doc__ = named.__doc__
    return endpoint


def routes(settings: ApiSettings) -> list[BaseRoute]:
    """The API's routes; the app's ``state.pool`` is the connection pool."""
    authenticator = auth.Authenticator(settings.auth)
    stripe_client = settings.stripe.client() if settings.stripe else None

    async def checkout_session(request: Request) -> Response:
        """POST /stripe/checkout/session."""
        try:
            body = checkout.parse_checkout_request(await _json_body(request))
            key = _idempotency_key(request)
        except OverflowError as exc:
            return _error(413, "payload_too_large", str(exc))
        except (ValueError, checkout.CheckoutRefused) as exc:
            return _error(400, getattr(exc, "code", "invalid_request"), str(exc))
        if stripe_client is None:
            return _error(503, "stripe_not_configured", "no Stripe secret key is configured (STRIPE_SECRET_KEY)")
        email = request.state.claims.get("email")
        try:
            session = await run_in_threadpool(
                checkout.create_checkout_session, request.app.state.pool.connection, stripe_client,
                request.state.user_id, body, email=email if isinstance(email, str) else None, idempotency_key=key,
            )
        except checkout.CheckoutRefused as exc:
            return _error(400, exc.code, str(exc))
        except checkout.StripeFailure as exc:
            log.error("checkout for %s: %s", request.state.user_id, exc)
            return _error(502, "stripe_error", str(exc), stage=exc.stage, stripe_code=exc.stripe_code,
                          stripe_status=exc.http_status)
        return JSONResponse(session)

    def subscription_state(request: Request, user_id: str) -> Any:
        """GET /stripe/subscription/state (in the worker thread that verified the token)."""
        with request.app.state.pool.connection() as conn:
            return BillingClient(conn).get_user_subscription_state(user_id).raw

    async def generate_with_credits(request: Request) -> Response:
        """POST /stories/generate-with-credits."""
        try:
            body = generation.parse_generation_request(request.state.user_id, await _json_body(request))
            key = _idempotency_key(request)
        except OverflowError as exc:
            return _error(413, "payload_too_large", str(exc))
        except (ValueError, generation.GenerationRefused) as exc:
            return _error(400, "invalid_request", str(exc))
        outcome = await generation.generate_with_credits(
            request.app.state.pool.connection, settings.generation, body, key
        )
        return JSONResponse(outcome.body, status_code=outcome.status_code)

    async def openapi(request: Request) -> Response:
        """GET /openapi.json."""
        return JSONResponse(openapi_document())

    return [
        Route("/stripe/checkout/session", _authenticated(authenticator, checkout_session), methods=["POST"]),
        Route("/stripe/subscription/state", _authenticated(authenticator, read=subscription_state), methods=["GET"]),
        Route("/stories/generate-with-credits", _authenticated(authenticator, generate_with_credits),
              methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    ]


# -- the OpenAPI document ---------------------------------------------------------------------------

def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _error_schema(codes: list[str] | None = None) -> dict[str, Any]:
    code: dict[str, Any] = {"type": "string"}
    if codes:
        code["enum"] = codes
    return {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": code, "message": {"type": "string"}},
        "additionalProperties": True,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


AUTH_CODES = [
    "missing_token", "invalid_scheme", "malformed_token", "invalid_algorithm", "invalid_signature",
    "token_expired", "token_not_yet_valid", "invalid_issuer", "invalid_audience", "invalid_authorized_party",
    "missing_subject", "missing_claim", "unknown_key",
]

_STATE = {
    "type": "object",
    "required": ["user_id", "credits_balance", "can_use_credits", "cached"],
    "properties": {
        "user_id": {"type": "string"},
        "subscription_id": _nullable({"type": "string"}),
        "stripe_customer_id": _nullable({"type": "string"}),
        "status": _nullable({"type": "string", "enum": [
            "incomplete", "incomplete_expired", "trialing", "active", "past_due", "unpaid", "canceled", "paused",
        ]}),
        "plan": _nullable({"type": "string"}),
        "price_id": _nullable({"type": "string"}),
        "credits_balance": {"type": "integer", "minimum": 0},
        "current_period_end": _nullable({"type": "string"}),
        "cancel_at_period_end": {"type": "boolean"},
        "can_use_credits": {"type": "boolean"},
        "reason": _nullable({"type": "string", "enum": ["no_subscription", "subscription_inactive", "period_ended"]}),
        "cached": {"type": "boolean"},
        "cached_at": _nullable({"type": "string"}),
        "expires_at": _nullable({"type": "string"}),
    },
}

_COMMON_ERRORS = {
    "401": _json(_error_schema(AUTH_CODES), "No valid bearer token: nothing was done."),
    "503": _json(_error_schema(["database_unavailable", "auth_unavailable", "stripe_not_configured"]),
                 "The database or the JWKS cannot be reached, or Stripe is not configured."),
}

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key returns the first request's outcome; nothing is charged twice.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": "^[ -~]*[!-~][ -~]*$"},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "billingdb application API",
        "version": "1.0.0",
        "description": "Stripe Checkout, subscription state and credit-gated generation for Clerk-authenticated "
                       "users. Every operation needs a Clerk session JWT (RS256) as a bearer token.",
    },
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    },
    "security": [{"bearerAuth": []}],
    "paths": {
        "/stripe/checkout/session": {
            "post": {
                "operationId": "createCheckoutSession",
                "summary": "Create a Stripe Checkout Session (subscription mode) for an active plan",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["price_id", "success_url", "cancel_url"],
                        "properties": {
                            "price_id": {"type": "string", "minLength": 1, "maxLength": 255,
                                         "description": "A Stripe price id that is an active plan."},
                            "success_url": {"type": "string", "format": "uri", "maxLength": checkout.MAX_URL},
                            "cancel_url": {"type": "string", "format": "uri", "maxLength": checkout.MAX_URL},
                        },
                    }}},
                },
                "responses": {
                    "200": _json({
                        "type": "object",
                        "required": ["session_id", "url", "stripe_customer_id", "price_id", "plan"],
                        "properties": {
                            "session_id": {"type": "string"},
                            "url": _nullable({"type": "string"}),
                            "stripe_customer_id": {"type": "string"},
                            "price_id": {"type": "string"},
                            "plan": {"type": "string"},
                        },
                    }, "The Checkout Session: send the user to url."),
                    "400": _json(_error_schema(["invalid_request", "unknown_price", "inactive_plan"]),
                                 "Malformed body, or the price is not an active plan."),
                    "413": _json(_error_schema(["payload_too_large"]), "The body is too large."),
                    "502": _json(_error_schema(["stripe_error"]),
                                 "Stripe failed or refused; the message says which call and why."),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/stripe/subscription/state": {
            "get": {
                "operationId": "getSubscriptionState",
                "summary": "The caller's subscription state and credit balance (get_user_subscription_state)",
                "responses": {
                    "200": _json(_STATE, "The state; cached tells whether it came from the 5-minute cache."),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/stories/generate-with-credits": {
            "post": {
                "operationId": "generateStoryWithCredits",
                "summary": "Generate a story, paid with credits held for the duration of the generation",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["prompt"],
                        "properties": {
                            "title": {"type": "string", "maxLength": generation.MAX_TITLE},
                            "prompt": {"type": "string", "minLength": 1, "maxLength": generation.MAX_PROMPT,
                                       "pattern": "\\S"},
                            "includeImage": {"type": "boolean", "default": False},
                        },
                    }}},
                },
                "responses": {
                    "200": _json({
                        "type": "object",
                        "required": ["hold_id", "credits_used", "balance", "transaction_id", "result", "replayed"],
                        "properties": {
                            "hold_id": {"type": "integer"},
                            "credits_used": {"type": "integer", "minimum": 1},
                            "balance": {"type": "integer", "minimum": 0},
                            "transaction_id": {"type": "integer"},
                            "result": {"description": "The generator's output."},
                            "replayed": {"type": "boolean"},
                        },
                    }, "Generated; the credits are spent. replayed: a retry of an earlier request with this key."),
                    "400": _json(_error_schema(["invalid_request"]), "Malformed body or Idempotency-Key."),
                    "402": _json(_error_schema(["insufficient_credits"]),
                                 "Not enough spendable credits (reason, balance, credits_required)."),
                    "403": _json(_error_schema(["no_subscription", "subscription_inactive", "period_ended"]),
                                 "The subscription does not allow spending credits (reason)."),
                    "409": _json(_error_schema(["request_in_progress", "hold_expired"]),
                                 "The Idempotency-Key's request still runs, or its hold expired before it ended."),
                    "413": _json(_error_schema(["payload_too_large"]), "The body is too large."),
                    "422": _json(_error_schema(["idempotency_key_reused"]),
                                 "The Idempotency-Key was used with a different body."),
                    "502": _json(_error_schema(["generation_failed"]),
                                 "The generator failed; the held credits were given back."),
                    **_COMMON_ERRORS,
                },
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the application API."""
    return OPENAPI
