"""Credit-gated work: ``POST /stories/generate-with-credits`` with a credit hold around the generator.

The seed deducted credits, generated, and refunded on failure: a process that
died in between kept the credits. Here the credits are *held* first and the
hold settles after the work:

1. ``reserve_credits(user, cost, ttl, key)``: refused with 402
   (insufficient_credits) or 403 (no_subscription, subscription_inactive,
   period_ended); otherwise the credits leave the spendable balance;
2. the configured generator runs (no database connection is held meanwhile);
3. success: ``commit_credit_hold(hold, result)`` spends the credits (a usage
   entry) and keeps the result; failure: ``release_credit_hold(hold, reason)``
   gives them back and the answer is 502 generation_failed;
4. a process that never gets to 3 leaves a hold that expires after ``ttl``;
   ``release_expired_credit_holds()`` (pg_cron, or ``billingdb maintenance
   run``) gives its credits back.

``Idempotency-Key`` (optional): the key of the hold. A retry with the same key
and body returns the first request's outcome (``replayed`` true) and charges
nothing again: the committed result with the current balance, the same
generation failure, 409 request_in_progress while the first request still
runs, 409 hold_expired when it never finished; the same key with another body
is 422 idempotency_key_reused.

The generator is a Python callable named ``"module:function"`` in the
configuration (``BILLINGDB_GENERATOR``); it gets a :class:`GenerationRequest`
and returns something JSON-serialisable (plain or ``async``). The default,
:func:`echo`, returns the title and the prompt.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from starlette.concurrency import run_in_threadpool

from billingdb.client import BillingClient, CreditHold
from billingdb.errors import ConfigurationError, CreditHoldSettled, IdempotencyConflict, InvalidArgument

__all__ = [
    "DEFAULT_GENERATOR",
    "GenerationConfig",
    "GenerationRefused",
    "GenerationRequest",
    "Outcome",
    "echo",
    "generate_with_credits",
    "load_generator",
    "parse_generation_request",
]

log = logging.getLogger("billingdb.generation")

ConnFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
Generator = Callable[["GenerationRequest"], Any]

DEFAULT_GENERATOR = "billingdb.service.generation:echo"
MAX_PROMPT = 4000
MAX_TITLE = 200

#: reserve_credits' refusal codes -> HTTP status.
REFUSAL_STATUS = {
    "insufficient_credits": 402,
    "no_subscription": 403,
    "subscription_inactive": 403,
    "period_ended": 403,
}


@dataclass(frozen=True)
class GenerationRequest:
    """What the generator gets."""

    user_id: str
    title: str | None
    prompt: str
    include_image: bool
    hold_id: int | None = None


def echo(request: GenerationRequest) -> dict[str, Any]:
    """The default generator: the story is the prompt."""
    return {"title": request.title, "story": request.prompt, "include_image": request.include_image}


def load_generator(spec: str) -> Generator:
    """The callable named ``"package.module:function"``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"generator {spec!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"generator {spec!r}: cannot import {module_name}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ConfigurationError(f"generator {spec!r}: {attribute} is not a callable of {module_name}")
    return target  # type: ignore[no-any-return]


@dataclass(frozen=True)
class GenerationConfig:
    """The generator, what a story costs, and how long its credits may stay held."""

    generator: Generator = echo
    generator_name: str = DEFAULT_GENERATOR
    story_credits: int = 1
    image_credits: int = 1
    hold_ttl: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.story_credits < 1 or self.image_credits < 0:
            raise ConfigurationError("a story costs at least 1 credit and an image at least 0")
        if not timedelta(0) < self.hold_ttl <= timedelta(days=1):
            raise ConfigurationError("the hold ttl must be more than 0 and at most 1 day")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> GenerationConfig:
        """``BILLINGDB_GENERATOR``, ``BILLINGDB_STORY_CREDITS``, ``BILLINGDB_IMAGE_CREDITS``,
        ``BILLINGDB_HOLD_TTL`` (seconds); ``overrides`` win when not None."""
        env = os.environ if environ is None else environ

        def pick(name: str, var: str, default: str) -> str:
            value = overrides.get(name)
            return str(value) if value is not None else (env.get(var) or default)

        spec = pick("generator", "BILLINGDB_GENERATOR", DEFAULT_GENERATOR)
        try:
            return cls(
                generator=load_generator(spec),
                generator_name=spec,
                story_credits=int(pick("story_credits", "BILLINGDB_STORY_CREDITS", "1")),
                image_credits=int(pick("image_credits", "BILLINGDB_IMAGE_CREDITS", "1")),
                hold_ttl=timedelta(seconds=float(pick("hold_ttl", "BILLINGDB_HOLD_TTL", "300"))),
            )
        except ValueError as exc:
            raise ConfigurationError(f"generation settings: {exc}") from None

    def cost(self, include_image: bool) -> int:
        return self.story_credits + (self.image_credits if include_image else 0)


class GenerationRefused(Exception):
    """The request body is not a generation request (400)."""


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict[str, Any]


def parse_generation_request(user_id: str, body: Any) -> GenerationRequest:
    """``{prompt, title?, includeImage?}`` (the seed's body); :class:`GenerationRefused` otherwise."""
    if not isinstance(body, dict):
        raise GenerationRefused("the body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise GenerationRefused("prompt must be a non-blank string")
    if len(prompt) > MAX_PROMPT:
        raise GenerationRefused(f"prompt is longer than {MAX_PROMPT} characters")
    title = body.get("title")
    if title is not None and (not isinstance(title, str) or len(title) > MAX_TITLE):
        raise GenerationRefused(f"title must be a string of at most {MAX_TITLE} characters")
    include_image = body.get("includeImage", False)
    if not isinstance(include_image, bool):
        raise GenerationRefused("includeImage must be true or false")
    return GenerationRequest(user_id=user_id, title=title, prompt=prompt, include_image=include_image)


def _fingerprint(request: GenerationRequest) -> str:
    data = json.dumps([request.title, request.prompt, request.include_image], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _success_body(hold: CreditHold, balance: int | None, transaction_id: int | None, replayed: bool) -> dict[str, Any]:
    return {
        "hold_id": hold.hold_id,
        "credits_used": hold.amount,
        "balance": balance,
        "transaction_id": transaction_id,
        "result": hold.result,
        "replayed": replayed,
    }


def _failure_body(hold: CreditHold, balance: int | None, replayed: bool) -> dict[str, Any]:
    return {
        "error": "generation_failed",
        "message": f"the generation failed ({hold.reason or 'no reason given'}); "
                   f"the {hold.amount} held credits were given back",
        "hold_id": hold.hold_id,
        "credits_used": 0,
        "balance": balance,
        "replayed": replayed,
    }


def _replay(hold: CreditHold, fingerprint: str) -> Outcome:
    """The outcome of the first request with this key, as it stands now."""
    first = (hold.metadata or {}).get("request_hash")
    if first is not None and first != fingerprint:
        return Outcome(422, {
            "error": "idempotency_key_reused",
            "message": "this Idempotency-Key was used for a different request body; use a new key",
            "hold_id": hold.hold_id,
        })
    if hold.status == "committed":
        return Outcome(200, _success_body(hold, hold.balance, hold.usage_transaction_id, replayed=True))
    if hold.status == "released":
        return Outcome(502, _failure_body(hold, hold.balance, replayed=True))
    if hold.status == "expired":
        return Outcome(409, {
            "error": "hold_expired",
            "message": "the first request with this Idempotency-Key never finished; its credits were given back "
                       "and nothing was charged. Retry with a new key.",
            "hold_id": hold.hold_id,
            "balance": hold.balance,
        })
    return Outcome(409, {
        "error": "request_in_progress",
        "message": "a request with this Idempotency-Key is still running; retry later",
        "hold_id": hold.hold_id,
        "expires_at": hold.expires_at,
    })


async def _call_generator(generator: Generator, request: GenerationRequest) -> Any:
    if inspect.iscoroutinefunction(generator):
        return await generator(request)
    result = await run_in_threadpool(generator, request)
    if inspect.isawaitable(result):
        return await result
    return result


def _db(connection: ConnFactory, method: str, *args: Any, **kwargs: Any) -> Any:
    with connection() as conn:
        return getattr(BillingClient(conn), method)(*args, **kwargs)


async def generate_with_credits(
    connection: ConnFactory,
    config: GenerationConfig,
    request: GenerationRequest,
    idempotency_key: str | None = None,
) -> Outcome:
    """Reserve, generate, commit or release; the HTTP outcome (see the module docstring)."""
    fingerprint = _fingerprint(request)
    cost = config.cost(request.include_image)
    description = f"Story generation: {request.title}"[:200] if request.title else "Story generation"

    # 1. Reserve. The same key with another cost is another request (the body differs).
    try:
        hold: CreditHold = await run_in_threadpool(
            _db, connection, "reserve_credits", request.user_id, cost, config.hold_ttl, idempotency_key,
            description=description,
            metadata={"request_hash": fingerprint, "operation": "generate_story",
                      "include_image": request.include_image},
        )
    except IdempotencyConflict:
        return Outcome(422, {
            "error": "idempotency_key_reused",
            "message": "this Idempotency-Key was used for a different request body; use a new key",
        })
    if not hold.success:
        code = hold.code or "refused"
        return Outcome(REFUSAL_STATUS.get(code, 403), {
            "error": code, "reason": code, "message": hold.message,
            "balance": hold.balance, "credits_required": cost,
        })
    if hold.replayed:
        return _replay(hold, fingerprint)
    assert hold.hold_id is not None
    hold_id = hold.hold_id

    # 2. Generate (no connection is held while it runs).
    try:
        output = await _call_generator(config.generator, GenerationRequest(
            user_id=request.user_id, title=request.title, prompt=request.prompt,
            include_image=request.include_image, hold_id=hold_id,
        ))
        json.dumps(output)  # the result is stored as jsonb and returned as JSON
    except asyncio.CancelledError:
        # The client went away or the server stops: give the credits back now
        # (the sweep would, later), then let the cancellation go on.
        await asyncio.shield(run_in_threadpool(_db, connection, "release_credit_hold", hold_id, "cancelled"))
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".replace("\x00", "")[:500]
        log.warning("generation for hold %s failed: %s", hold_id, reason)
        released: CreditHold = await run_in_threadpool(_db, connection, "release_credit_hold", hold_id, reason)
        return Outcome(502, _failure_body(released, released.balance, replayed=False))

    # 3. Commit: the credits are spent and the result kept for replays. An
    # output the database refuses (a NUL character, a result too large or too
    # deep) is a failed generation: the hold is released in this request.
    try:
        committed: CreditHold = await run_in_threadpool(_db, connection, "commit_credit_hold", hold_id, output)
    except (InvalidArgument, psycopg.DataError) as exc:
        reason = f"the generator's output cannot be stored: {str(exc).splitlines()[0] if str(exc) else exc}"[:500]
        log.warning("generation for hold %s: %s", hold_id, reason)
        released = await run_in_threadpool(_db, connection, "release_credit_hold", hold_id, reason)
        return Outcome(502, _failure_body(released, released.balance, replayed=False))
    except CreditHoldSettled:
        # The hold expired and the sweep gave its credits back while the generator ran.
        return Outcome(409, {
            "error": "hold_expired",
            "message": f"the generation took longer than the hold lasts ({config.hold_ttl.total_seconds():g} s); "
                       "its credits were given back and nothing was charged. Retry.",
            "hold_id": hold_id,
        })
    return Outcome(200, _success_body(committed, committed.balance, committed.transaction_id, replayed=False))
