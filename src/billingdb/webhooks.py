"""Stripe webhook intake: verify, validate, hand the event to the database.

The database does the real work: ``public.process_stripe_event(event jsonb)``
records the event idempotently, dispatches it by type and answers with
``{event_id, status, detail}``. This module only decides whether a request may
reach it, and turns its answer into an HTTP status:

1. bodies above :attr:`WebhookConfig.max_body` bytes are refused with 413;
2. the ``Stripe-Signature`` header is verified on the raw bytes with the
   official ``stripe`` library (HMAC-SHA256, timestamp tolerance 300 s), trying
   each configured secret so that a secret can be rolled without downtime;
3. the body must be a JSON object that PostgreSQL can store (no NUL character,
   not nested too deeply);
4. anything refused in 1-3 is answered before the database is touched;
   Stripe's envelope (``id``, ``type``, ``created``, ``data.object``) is
   checked by ``process_stripe_event`` alone, whose refusal (22023) is a 400;
   nothing is written either way;
5. ``processed``, ``duplicate``, ``ignored``, ``stale`` and ``pending`` answer
   200; ``failed`` answers 500 so that Stripe retries the delivery.

:func:`process_event` is the same path without the signature, used by
``billingdb events replay`` for backfills.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import stripe

from billingdb import db
from billingdb.errors import BillingError, DatabaseUnavailable, InvalidArgument
from billingdb.jsonbody import BodyRefused, parse_json

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_TOLERANCE",
    "EventRejected",
    "Outcome",
    "WebhookConfig",
    "HTTP_STATUS",
    "handle",
    "parse_event",
    "process_event",
    "secrets_from_env",
    "verify_signature",
]

log = logging.getLogger("billingdb.webhooks")

DEFAULT_TOLERANCE = 300
DEFAULT_MAX_BODY = 256 * 1024

#: process_stripe_event's status -> the HTTP status answered to Stripe.
HTTP_STATUS: dict[str, int] = {
    "processed": 200,
    "duplicate": 200,
    "ignored": 200,
    "stale": 200,
    "pending": 200,
    "failed": 500,
}


@dataclass(frozen=True)
class WebhookConfig:
    """Endpoint secrets (several during a rotation), timestamp tolerance, body limit."""

    secrets: tuple[str, ...]
    tolerance: int = DEFAULT_TOLERANCE
    max_body: int = DEFAULT_MAX_BODY

    def __post_init__(self) -> None:
        if not self.secrets or any(not s.strip() for s in self.secrets):
            raise ValueError("at least one non-blank webhook secret is required")
        if self.tolerance <= 0 or self.max_body <= 0:
            raise ValueError("tolerance and max_body must be positive")


@dataclass(frozen=True)
class Outcome:
    """What to answer: an HTTP status and a JSON body."""

    status_code: int
    body: dict[str, Any] = field(default_factory=dict)


class EventRejected(Exception):
    """A request refused before the database was touched (``status_code`` 400 or 413)."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code

    def outcome(self) -> Outcome:
        return Outcome(self.status_code, {"error": self.code, "message": str(self)})


def secrets_from_env(value: str | None) -> tuple[str, ...]:
    """Secrets from ``STRIPE_WEBHOOK_SECRET``: comma-separated, blanks dropped."""
    if not value:
        return ()
    return tuple(s.strip() for s in value.split(",") if s.strip())


def verify_signature(body: bytes, header: str | None, secrets: Iterable[str], tolerance: int) -> None:
    """Raise :class:`EventRejected` (400) unless one secret verifies the header on these bytes."""
    if not header:
        raise EventRejected(400, "missing_signature", "no Stripe-Signature header")
    # Stripe's library refuses a timestamp older than the tolerance; one as far
    # in the future is as suspect (a replay prepared in advance): refuse it too.
    stamps = [part[2:] for part in header.split(",") if part.strip().startswith("t=")]
    if stamps and stamps[0].strip().isdigit() and int(stamps[0]) > time.time() + tolerance:
        raise EventRejected(400, "bad_signature", "Timestamp is in the future, beyond the tolerance")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise EventRejected(400, "malformed_body", "the body is not UTF-8") from None
    reasons: list[str] = []
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            reasons.append(str(exc.user_message or exc))
    # The most useful reason: an expired timestamp means a secret matched.
    expired = [r for r in reasons if "tolerance" in r]
    raise EventRejected(400, "bad_signature", (expired or reasons or ["no secret configured"])[0])


def parse_event(body: bytes | str) -> dict[str, Any]:
    """Parse an event body: JSON that PostgreSQL can store, an object; :class:`EventRejected` (400) otherwise.

    Stripe's envelope (id, type, created, data.object) is checked by process_stripe_event alone.
    """
    try:
        event = parse_json(body)
    except BodyRefused as exc:
        raise EventRejected(400, exc.code, str(exc)) from None
    if not isinstance(event, dict):
        raise EventRejected(400, "invalid_event", "the event must be a JSON object")
    return event


def process_event(conn: psycopg.Connection[Any], event: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """Run one event through process_stripe_event; returns {event_id, status, detail}.

    Text is sent as it is (PostgreSQL parses it); a mapping is serialised. An event the database
    refuses as malformed (22023, or JSON it cannot store) is :class:`EventRejected` (400), and
    nothing is written.
    """
    if isinstance(event, bytes):
        text = event.decode("utf-8")
    elif isinstance(event, str):
        text = event
    else:
        text = json.dumps(dict(event))
    try:
        result = db.query(conn, "process_stripe_event", {"event": text})
    except InvalidArgument as exc:
        raise EventRejected(400, "invalid_event", str(exc)) from None
    except psycopg.DataError as exc:
        raise EventRejected(400, "invalid_event", str(exc).splitlines()[0]) from None
    if not isinstance(result, dict):
        raise BillingError(f"process_stripe_event returned {result!r}")
    return result


def handle(conn_factory: Any, body: bytes, signature: str | None, config: WebhookConfig) -> Outcome:
    """The whole intake for one request whose body is already read (at most ``max_body`` bytes).

    ``conn_factory()`` is a context manager yielding an autocommit connection; it
    is entered only once the request passed every check.
    """
    try:
        if len(body) > config.max_body:
            raise EventRejected(413, "payload_too_large", f"the body exceeds {config.max_body} bytes")
        verify_signature(body, signature, config.secrets, config.tolerance)
        event = parse_event(body)
    except EventRejected as exc:
        log.warning("webhook refused (%s): %s", exc.code, exc)
        return exc.outcome()
    event_id = event.get("id")
    try:
        with conn_factory() as conn:
            # The body as received: parsed once here (JSON, an object), then by PostgreSQL.
            result = process_event(conn, body)
    except EventRejected as exc:
        # The database's envelope check (22023): the event is refused, nothing is written.
        log.warning("webhook %s refused (%s): %s", event_id, exc.code, exc)
        return exc.outcome()
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        log.error("webhook %s: database unavailable: %s", event_id, exc)
        return Outcome(503, {"error": "database_unavailable", "message": str(exc).splitlines()[0]})
    except Exception as exc:
        log.exception("webhook %s: unexpected error", event_id)
        return Outcome(500, {"error": "internal_error", "message": str(exc).splitlines()[0] if str(exc) else
                             type(exc).__name__, "sqlstate": getattr(exc, "sqlstate", None)})
    status = str(result.get("status"))
    code = HTTP_STATUS.get(status, 500)
    if code >= 500:
        log.error("webhook %s (%s): %s %s", event_id, event.get("type"), status, result.get("detail"))
    return Outcome(code, result)
