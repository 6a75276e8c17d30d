"""Stripe events for the issue 4 benchmarks: realistic, unique, for the seeded users.

Every event starts as a :class:`billingdb.stripe_samples.StripeWorld` event (Stripe's
fixture objects with all their noise), in both API shapes, for a seeded user
(``bench_user_U``, customer ``cus_bench_U``, subscription ``sub_bench_U`` on
the bench plan). The mix is a monthly renewal: ``customer.subscription.updated``
(the period rolls over) and ``invoice.paid`` (``subscription_cycle``, which
allocates the plan's credits), each in the pre-basil and the basil shape:
:data:`KINDS`, numbered 1 .. 4.

A kind is kept as a text *template* with tokens: ``@N@`` the event's number,
``@U@`` the user's number, ``@P0@`` / ``@PE@`` the previous period's start and
the new period's end. The number is the event's ``created`` (unix seconds)
and part of its id (``evt_bench_N``) and its invoice's id (``in_bench_N``):
numbers come from the sequence ``bench.event_seq``, which starts one second
after the seed, so every event is new (real work, never a duplicate) and a
subscription's events are strictly newer one after the other. (Numbers run
ahead of the clock by one second per event: created times end up minutes to
hours in the future, which nothing checks.)

The same templates serve both drivers: ``bench.stripe_event(kind, uid, n)``
(``bench/sql/events.sql``) renders them in the database for pgbench, and
:func:`render` in Python for the HTTP intake.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from billingdb.testing.stripe import BASIL, MONTH, PRE_BASIL, StripeWorld, encode

from bench import sqlfiles
from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.benchmarks import Context

__all__ = ["KINDS", "ALLOCATION_KINDS", "DUPLICATE_POOL", "templates", "render", "install", "seed_duplicates",
           "check_events", "check_duplicates"]

#: (event type, API version) of kinds 1 .. 4; bench/scripts/process_stripe_event.sql picks random(1, 4).
KINDS: tuple[tuple[str, str], ...] = (
    ("customer.subscription.updated", BASIL),
    ("invoice.paid", BASIL),
    ("customer.subscription.updated", PRE_BASIL),
    ("invoice.paid", PRE_BASIL),
)
#: Kinds that allocate credits (the seed's "credit allocation < 500 ms" case).
ALLOCATION_KINDS = frozenset(k for k, (t, _) in enumerate(KINDS, 1) if t == "invoice.paid")
#: Events delivered once before the duplicates run; must match random(1, 1000) in
#: bench/scripts/process_stripe_event_duplicate.sql.
DUPLICATE_POOL = 1000
_BATCH = 100  # pool events processed per statement (each holds its customer's and user's locks to commit)

# Sentinel values the templates are built with, replaced by tokens (never a real time: year 2096).
_N, _PE, _P0 = 3_999_999_001, 3_999_999_002, 3_999_999_003
_U = "987654321"
_TOKENS = {str(_N): "@N@", str(_PE): "@PE@", str(_P0): "@P0@", _U: "@U@"}


def _event(kind: int, price_id: str, user_prefix: str) -> dict[str, Any]:
    event_type, api_version = KINDS[kind - 1]
    world = StripeWorld(
        api_version=api_version,
        user_id=f"{user_prefix}{_U}",
        customer_id=f"cus_bench_{_U}",  # as bench/sql/seed.sql links them
        subscription_id=f"sub_bench_{_U}",
        price_id=price_id,
        now=_N,
        status="active",
        period_start=_N,
        period_end=_PE,
    )
    if event_type == "customer.subscription.updated":
        return world.event(event_type, world.subscription(), event_id=f"evt_bench_{_N}",
                           previous_attributes={"current_period_start": _P0, "current_period_end": _N})
    invoice = world.invoice("subscription_cycle", invoice_id=f"in_bench_{_N}")
    return world.event(event_type, invoice, event_id=f"evt_bench_{_N}")


@cache
def templates(price_id: str, user_prefix: str) -> dict[int, str]:
    """{kind: template text} for kinds 1 .. 4."""
    found: dict[int, str] = {}
    for kind in range(1, len(KINDS) + 1):
        text = encode(_event(kind, price_id, user_prefix)).decode()
        for sentinel, token in _TOKENS.items():
            if sentinel not in text and token in ("@N@", "@U@"):
                raise BenchError(f"event template {kind}: {token} is missing")
            text = text.replace(sentinel, token)
        found[kind] = text
    # A rendered template is the event it claims to be (no sentinel was part of another value).
    for kind, text in found.items():
        event = json.loads(render(text, uid=7, n=_N - 1))
        got = (event["id"], event["created"], event["type"], event["data"]["object"]["customer"])
        if got != (f"evt_bench_{_N - 1}", _N - 1, KINDS[kind - 1][0], "cus_bench_7"):
            raise BenchError(f"event template {kind} renders wrongly: {got}")
    return found


def render(template: str, *, uid: int, n: int) -> str:
    """Event number ``n`` for seeded user ``uid`` (the same text bench.stripe_event makes)."""
    return (template.replace("@N@", str(n)).replace("@U@", str(uid))
            .replace("@PE@", str(n + MONTH)).replace("@P0@", str(n - MONTH)))


def install(ctx: Context, price_id: str, user_prefix: str) -> None:
    """Schema bench: templates, the event sequence, bench.stripe_event and bench.next_event (once per run)."""
    with ctx.connect("billingdb") as conn:
        for query in ("create_bench_schema", "create_event_templates", "create_event_seq",
                      "create_delivered"):
            sqlfiles.run(conn, query)
        sqlfiles.run(conn, "clear_event_templates")
        texts = templates(price_id, user_prefix)
        for kind, text in texts.items():
            event_type, api_version = KINDS[kind - 1]
            sqlfiles.run(conn, "insert_event_template",
                         {"kind": kind, "event_type": event_type, "api_version": api_version, "body": text})
        # bench.stripe_event holds the templates as literals: made after they are written.
        for query in ("create_stripe_event_function", "create_next_event_function"):
            sqlfiles.run(conn, query)
        sqlfiles.run(conn, "start_event_seq")
        # The database renders the templates as render() does.
        for kind, text in texts.items():
            expected = json.loads(render(text, uid=7, n=_N - 1))
            if sqlfiles.value(conn, "render_event", {"kind": kind, "uid": 7, "n": _N - 1}) != expected:
                raise BenchError(f"bench.stripe_event renders event template {kind} unlike render()")


def seed_duplicates(ctx: Context) -> None:
    """Deliver the duplicates run's pool once: DUPLICATE_POOL events, kinds and users in turn."""
    with ctx.connect("billingdb") as conn:
        if sqlfiles.value(conn, "count_delivered"):
            return
        for first in range(1, DUPLICATE_POOL + 1, _BATCH):
            last = min(first + _BATCH - 1, DUPLICATE_POOL)
            row = sqlfiles.run(conn, "seed_delivered", {"first": first, "last": last, "kinds": len(KINDS),
                                                         "users": ctx.options.users})[0]
            if row["done"] != row["delivered"]:
                raise BenchError(f"seeding duplicates: {row['delivered'] - row['done']} of {row['delivered']} "
                                 "events were not processed")


def _expect(result: Any, status: str, what: str) -> dict[str, Any]:
    if not isinstance(result, dict) or result.get("status") != status:
        raise BenchError(f"{what}: expected status {status}, got {result!r}")
    return result


def check_events(ctx: Context) -> None:
    """One new event of each kind is processed: the subscription updated, the invoice's credits allocated."""
    with ctx.connect("billingdb") as conn:
        for kind, (event_type, api_version) in enumerate(KINDS, 1):
            what = f"process_stripe_event({event_type}, {api_version})"
            result = _expect(sqlfiles.value(conn, "sample_event", {"kind": kind, "uid": 1}), "processed", what)
            detail = result.get("detail") or {}
            if kind in ALLOCATION_KINDS:
                allocation = detail.get("allocation") or {}
                ok = allocation.get("success") is True and allocation.get("duplicate") is False
            else:
                ok = (detail.get("subscription") or {}).get("result") == "updated"
            if not ok:
                raise BenchError(f"{what}: processed but did no real work: {detail!r}")


def check_duplicates(ctx: Context) -> None:
    """Delivering a pool event again is a duplicate."""
    with ctx.connect("billingdb") as conn:
        if sqlfiles.value(conn, "count_delivered") != DUPLICATE_POOL:
            raise BenchError(f"the duplicates pool does not hold {DUPLICATE_POOL} events")
        _expect(sqlfiles.value(conn, "sample_duplicate"), "duplicate", "a re-delivered event")
