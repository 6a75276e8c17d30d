"""`billingdb stripe sync-events`: missed webhooks recovered from Stripe's Events API.

Against localstripe (a stateful Stripe emulator that sends signed webhooks) for the integrator's case:
the webhook endpoint is down for a stretch of one customer's life cycle, then sync-events brings that
customer's state and ledger to what a fully delivered customer has. Against a stand-in of
``GET /v1/events`` (Stripe's list shape: newest first, ``created[gte]``, ``starting_after``,
``has_more``) for what localstripe does not do: the newer (basil) event shapes, 429s, a 401, a
malformed page, a failure on page two, and a run that stops half-way then resumes.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
import stripe
from events.event_helpers import process, setup_plans, world_state
from starlette.testclient import TestClient
from typer.testing import CliRunner

from billingdb import event_sync, service, webhooks
from billingdb.cli import app, main
from billingdb.service.background import EventSyncSettings
from billingdb.stripe_api import HANDLED_EVENT_TYPES, StripeConfig
from billingdb.testing import localstripe
from billingdb.testing.stripe import StripeWorld

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from api_support import Recorded, Reply, StandIn, stripe_error, uvicorn_server  # noqa: E402

runner = CliRunner()
KEY = "sk_test_sync"


def sync(database_url: str, api_base: str, *args: str, key: str | None = KEY):  # type: ignore[no-untyped-def]
    keys = ["--api-key", key] if key else []
    return runner.invoke(app, ["stripe", "sync-events", *args, *keys, "--api-base", api_base,
                               "--database-url", database_url])


def sync_row(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM billingdb.stripe_event_sync").fetchone()


def table_rows(conn: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    """What a sync may write: events (with their outcome), ledger, subscriptions, activity, the sync row."""
    queries = {
        "events": "SELECT stripe_event_id, status, processed FROM public.stripe_events ORDER BY stripe_event_id",
        "ledger": "SELECT id, user_id, amount, transaction_type FROM public.credit_transactions ORDER BY id",
        "subscriptions": "SELECT * FROM billingdb.subscriptions ORDER BY subscription_id",
        "activity": "SELECT id FROM billingdb.activity_log ORDER BY id",
        "sync": "SELECT cursor_created, cursor_event_id FROM billingdb.stripe_event_sync",
    }
    return {name: conn.execute(sql).fetchall() for name, sql in queries.items()}


# -- against localstripe -------------------------------------------------------------------------

SECRET = "whsec_sync_events_test"
PLAN = "team_plan_sync"


def _subscribe(client: stripe.StripeClient, user_id: str) -> str:
    card = client.v1.payment_methods.create(params={
        "type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
    })
    customer = client.v1.customers.create(params={
        "email": f"{user_id}@example.com", "metadata": {"user_id": user_id}, "payment_method": card.id,
        "invoice_settings": {"default_payment_method": card.id},
    })
    subscription = client.v1.subscriptions.create(params={
        "customer": customer.id, "items": [{"plan": PLAN}], "metadata": {"user_id": user_id},
    })
    return str(subscription.id)


def _wait_for(what: str, check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _customer_view(conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any]:
    """One user's state and ledger without ids: comparable between two users."""
    state = conn.execute("SELECT public.get_user_subscription_state(%s) AS s", (user_id,)).fetchone()["s"]
    ledger = conn.execute("SELECT transaction_type, amount, metadata->>'billing_reason' AS reason "
                          "FROM public.credit_transactions WHERE user_id = %s ORDER BY id", (user_id,)).fetchall()
    return {"state": {k: state.get(k) for k in ("status", "plan", "credits_balance", "can_use_credits")},
            "ledger": ledger}


def test_events_missed_while_the_endpoint_was_down_are_recovered_from_localstripe(
    localstripe_url: str, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("SELECT public.set_plan(%s, 'Team', 200)", (PLAN,))
    client = stripe.StripeClient(KEY, base_addresses={"api": localstripe_url}, max_network_retries=0)
    product = client.v1.products.create(params={"name": "Team"})
    client.v1.plans.create(params={"id": PLAN, "product": product.id, "amount": 2999, "currency": "usd",
                                   "interval": "month"})
    app_ = service.create_app(service.ServiceSettings(
        database_url=database_url, webhook=webhooks.WebhookConfig(secrets=(SECRET,)), pool_max=4,
    ))
    with uvicorn_server(app_) as billingdb_url:
        # The endpoint is down (nothing listens there) while ada subscribes and pays.
        with StandIn(lambda rec: (500, {"error": "deploy in progress"})) as down:
            localstripe.register_webhook(localstripe_url, "billingdb", down.url, SECRET)
            ada_sub = _subscribe(client, "user_sync_ada")
            # localstripe sends each webhook a second after its event: wait for the last one (the
            # subscription's), then a little for any sent alongside it.
            _wait_for("the deliveries to the down endpoint", lambda: any(
                b'"customer.subscription.created"' in r.body for r in down.requests))
            time.sleep(1)
        # Back up: grace's whole life cycle is delivered, and so is ada's cancellation.
        localstripe.register_webhook(localstripe_url, "billingdb", f"{billingdb_url}{service.WEBHOOK_PATH}", SECRET)
        grace_sub = _subscribe(client, "user_sync_grace")
        _wait_for("grace's credits", lambda: _customer_view(conn, "user_sync_grace")["state"]["credits_balance"] == 200)
        client.v1.subscriptions.cancel(ada_sub)
        client.v1.subscriptions.cancel(grace_sub)
        _wait_for("both cancellations", lambda: all(
            _customer_view(conn, u)["state"]["status"] == "canceled" for u in ("user_sync_ada", "user_sync_grace")))

    full = _customer_view(conn, "user_sync_grace")
    assert {k: full["state"][k] for k in ("status", "plan", "credits_balance")} == {
        "status": "canceled", "plan": "Team", "credits_balance": 200}
    missed = _customer_view(conn, "user_sync_ada")
    assert missed["state"]["credits_balance"] == 0 and missed["ledger"] == []  # the paid invoice never arrived

    result = sync(database_url, localstripe_url)
    assert result.exit_code == 0, result.output
    assert "invoice.payment_succeeded" in result.output and "processed" in result.output
    assert _customer_view(conn, "user_sync_ada") == full
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events WHERE NOT processed").fetchone()["n"] == 0
    row = sync_row(conn)
    assert row is not None and row["cursor_event_id"].startswith("evt_") and row["last_error"] is None
    assert row["last_succeeded_at"] is not None

    # A second run: every event a duplicate, nothing changes.
    before = table_rows(conn)
    again = sync(database_url, localstripe_url)
    assert again.exit_code == 0, again.output
    assert "processed" not in again.output and "duplicate" in again.output
    assert table_rows(conn) == before


# -- against a stand-in of Stripe's Events API ---------------------------------------------------


class EventsApi(StandIn):
    """``GET /v1/events`` as Stripe answers it, over ``events``; ``faults``: replies for the next requests
    (None answers normally)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.faults: list[Reply | None] = []
        super().__init__(self._answer)

    def _answer(self, rec: Recorded) -> Reply:
        if self.faults:
            fault = self.faults.pop(0)
            if fault is not None:
                return fault
        url = urlsplit(rec.path)
        query = dict(parse_qsl(url.query))
        if rec.method != "GET" or url.path != "/v1/events":
            return stripe_error(404, f"Unrecognized request URL ({url.path})", "invalid_request_error")
        if rec.headers.get("authorization") != f"Bearer {KEY}":
            return stripe_error(401, "Invalid API Key provided: sk_test_***", "invalid_request_error")
        gte = int(query.get("created[gte]", 0))
        # Newest first; within one second, the latest created first.
        listed = sorted(reversed([e for e in self.events if e["created"] >= gte]),
                        key=lambda e: e["created"], reverse=True)
        if "starting_after" in query:
            ids = [e["id"] for e in listed]
            listed = listed[ids.index(query["starting_after"]) + 1:]
        limit = int(query.get("limit", 10))
        return 200, {"object": "list", "url": "/v1/events", "has_more": len(listed) > limit, "data": listed[:limit]}

    def pages(self) -> int:
        return sum(p == "GET /v1/events" for p in self.paths())


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 3 events, and 429 backoffs of 10 ms: the paging and retries without the wait."""
    monkeypatch.setattr(event_sync, "PAGE_SIZE", 3)
    monkeypatch.setattr(event_sync, "RATE_LIMIT_BACKOFF", 0.01)


def handled(events: list[dict[str, Any]]) -> int:
    return sum(e["type"] in HANDLED_EVENT_TYPES for e in events)


def _life_cycle(world: StripeWorld) -> list[dict[str, Any]]:
    """Checkout, a renewal, a cancellation at the period's end: 10 events, 9 of handled types."""
    events = world.new_subscription()
    world.tick(60)
    events += world.renewal()
    world.tick(60)
    events += world.cancel_at_end()
    return events


def _full_delivery(connect: Any, world: StripeWorld, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The state every event delivered gives, seen in a transaction that is then rolled back."""
    tx = connect(autocommit=False)
    try:
        for event in events:
            process(tx, event)
        return world_state(tx, world.user_id, world.customer_id)
    finally:
        tx.rollback()


@pytest.mark.parametrize("api_version", ["2024-06-20", "2025-03-31.basil"])
def test_a_stretch_of_missed_events_is_recovered_to_exactly_what_full_delivery_gives(
    api_version: str, conn: psycopg.Connection[Any], connect: Any, database_url: str, small_pages: None
) -> None:
    setup_plans(conn)
    world = StripeWorld(api_version=api_version)
    events = _life_cycle(world)
    expected = _full_delivery(connect, world, events)
    assert expected["balance"] == 60 and expected["state"]["cancel_at_period_end"] is True

    # Webhooks: the first two and the last arrived; the endpoint was down for the rest.
    for event in events[:2] + events[-1:]:
        process(conn, event)
    assert world_state(conn, world.user_id, world.customer_id) != expected

    with EventsApi(events) as api:
        result = sync(database_url, api.url, "--since", "2h")
        assert result.exit_code == 0, result.output
        assert api.pages() == -(-len(events) // 3) + (len(events) % 3 == 0)
        assert "(1 of other types skipped)" in result.output  # invoice.created
        # Where each ended: the older updates are stale behind the newest, delivered before them.
        assert f"{handled(events)} events: " in result.output and "failed" not in result.output
        assert world_state(conn, world.user_id, world.customer_id) == expected

        # Again, from the cursor: nothing new, nothing changed.
        before = table_rows(conn)
        again = sync(database_url, api.url)
        assert again.exit_code == 0, again.output
        assert "processed" not in again.output and table_rows(conn) == before


def test_dry_run_counts_what_is_new_and_writes_nothing(
    conn: psycopg.Connection[Any], database_url: str, small_pages: None
) -> None:
    setup_plans(conn)
    world = StripeWorld()
    events = world.new_subscription()
    process(conn, events[0])
    before = table_rows(conn)
    with EventsApi(events) as api:
        result = sync(database_url, api.url, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"dry run: {len(events) - 1} new, nothing applied" in result.output
    assert "customer.subscription.created" in result.output
    assert table_rows(conn) == before and sync_row(conn) is None


def test_429s_back_off_and_resume_after_the_last_event_received(
    conn: psycopg.Connection[Any], database_url: str, small_pages: None
) -> None:
    setup_plans(conn)
    world = StripeWorld()
    events = world.new_subscription() + world.renewal()
    rate_limited = stripe_error(429, "Too many requests hit the API too quickly.", "invalid_request_error",
                                "rate_limit")
    with EventsApi(events) as api:
        api.faults = [None, rate_limited, rate_limited, None]  # page 2 is refused twice
        result = sync(database_url, api.url)
        assert result.exit_code == 0, result.output
        queries = [dict(parse_qsl(urlsplit(r.path).query)) for r in api.requests]
    assert queries[1].get("starting_after") == queries[3].get("starting_after") is not None
    assert world_state(conn, world.user_id, world.customer_id)["balance"] == 60
    assert f"{handled(events)} events: {handled(events)} processed" in result.output


def test_a_rate_limit_that_holds_is_one_line_and_exit_2(
    conn: psycopg.Connection[Any], database_url: str, small_pages: None
) -> None:
    world = StripeWorld()
    with EventsApi(world.new_subscription()) as api:
        api.faults = [stripe_error(429, "Too many requests.", "invalid_request_error", "rate_limit")] * 10
        result = sync(database_url, api.url)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: Stripe's rate limit (429) held after the retries: Too many requests.; run again later"]
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == 0


@pytest.mark.parametrize(("fault", "message"), [
    (stripe_error(401, "Invalid API Key provided: sk_test_***", "invalid_request_error"),
     "error: Stripe refused the API key (401): Invalid API Key provided: sk_test_***; check STRIPE_SECRET_KEY or "
     "--api-key"),
    ((200, b"<html>upstream proxy error</html>"), "error: Stripe failed (200): Invalid response body from API"),
    ((200, {"object": "list", "url": "/v1/events", "has_more": False, "data": ["evt_1", 7]}),
     "error: Stripe's event list holds something that is not an event: evt_1"),
    ((200, {"object": "list", "url": "/v1/events", "has_more": False,
            "data": [{"id": "evt_1", "object": "event", "type": "invoice.paid"}]}),
     "error: Stripe's event list holds something that is not an event"),
    ((200, {"object": "list", "url": "/v1/events", "has_more": True,
            "data": [{"id": "evt_same", "object": "event", "type": "invoice.paid", "created": 1}]}),
     "error: Stripe's event list repeats evt_same"),
    ((200, {"object": "list", "url": "/v1/events", "has_more": False, "data": None}),
     "error: Stripe's event list page has no data array or no has_more boolean"),
    ((200, {"object": "list", "url": "/v1/events", "has_more": False}),
     "error: Stripe's event list page has no data array or no has_more boolean"),
    ((200, "hello"), "error: Stripe's answer to GET /v1/events is not a list page"),
    ((200, {"object": "list", "url": "/v1/events", "has_more": True, "data": []}),
     "error: Stripe's event list page is empty but says it has more"),
])
def test_a_refused_key_or_a_malformed_page_is_one_line_exit_2_and_nothing_applied(
    fault: Reply, message: str, conn: psycopg.Connection[Any], database_url: str, small_pages: None
) -> None:
    setup_plans(conn)
    world = StripeWorld()
    with EventsApi(world.new_subscription()) as api:
        api.faults = [None, fault, fault, fault]  # page 1 fine, then bad: the events of page 1 are not applied either
        result = sync(database_url, api.url)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == 0
    row = sync_row(conn)
    # The failed run is recorded for `billingdb health`; the cursor did not move.
    assert row is not None and row["cursor_event_id"] is None and row["last_succeeded_at"] is None
    assert row["last_error"] and row["last_error"].split(":")[0] in message


def test_a_run_that_stops_half_way_continues_from_the_cursor(
    conn: psycopg.Connection[Any], connect: Any, small_pages: None
) -> None:
    setup_plans(conn)
    world = StripeWorld(api_version="2025-03-31.basil")
    events = _life_cycle(world)
    expected = _full_delivery(connect, world, events)

    def die(_: int) -> None:
        raise KeyboardInterrupt  # a kill after the first batch committed

    with EventsApi(events) as api:
        client = stripe.StripeClient(KEY, base_addresses={"api": api.url}, max_network_retries=0)
        with pytest.raises(KeyboardInterrupt):
            event_sync.sync_events(conn, client, batch_size=4, on_batch=die)
        row = sync_row(conn)
        assert row is not None and row["cursor_event_id"] == events[3]["id"]
        assert "KeyboardInterrupt" in row["last_error"]
        assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == 4

        report = event_sync.sync_events(conn, client, batch_size=4)
    assert report.since == datetime.fromtimestamp(events[3]["created"], UTC)
    assert world_state(conn, world.user_id, world.customer_id) == expected
    # The second run starts at the cursor's second: the events of that second come again.
    assert sum(report.outcomes.values()) == report.fetched >= handled(events) - 4
    assert report.outcomes["failed"] == 0


def test_limit_applies_the_oldest_and_the_next_run_continues(
    conn: psycopg.Connection[Any], connect: Any, database_url: str, small_pages: None
) -> None:
    setup_plans(conn)
    world = StripeWorld()
    events = _life_cycle(world)
    expected = _full_delivery(connect, world, events)
    with EventsApi(events) as api:
        first = sync(database_url, api.url, "--limit", "3")
        assert first.exit_code == 0, first.output
        assert f"{handled(events) - 3} more to apply: run again" in first.output
        assert sync_row(conn)["cursor_event_id"] == events[2]["id"]
        rest = sync(database_url, api.url)
        assert rest.exit_code == 0, rest.output
    assert world_state(conn, world.user_id, world.customer_id) == expected


def test_one_sync_at_a_time(conn: psycopg.Connection[Any], connect: Any, database_url: str) -> None:
    other = connect()
    assert other.execute("SELECT public.begin_stripe_event_sync() AS r").fetchone()["r"]["started"] is True
    with EventsApi(StripeWorld().new_subscription()) as api:
        result = sync(database_url, api.url)
        assert result.exit_code == 0
        assert "another Events API sync is running" in result.output
        assert api.requests == []
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "45d"], "error: Stripe keeps events for 30 days:"),
    (["--since", "yesterday"], "error: 'yesterday' is neither a duration (30m, 2h, 7d) nor an ISO date"),
    (["--since", "99999999999d"], "error: '99999999999d' is too long a duration"),
    (["--since", (datetime.now(UTC) + timedelta(days=2)).date().isoformat()], "error: "),
    ([], "error: no Stripe API key: pass --api-key or set STRIPE_SECRET_KEY"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    args: list[str], message: str, conn: psycopg.Connection[Any], database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    with EventsApi(StripeWorld().new_subscription()) as api:
        result = sync(database_url, api.url, *args, key=KEY if args else None)
        assert api.requests == []
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert table_rows(conn) == {"events": [], "ledger": [], "subscriptions": [], "activity": [], "sync": []}


def test_the_key_comes_from_the_environment(
    conn: psycopg.Connection[Any], database_url: str, monkeypatch: pytest.MonkeyPatch, small_pages: None
) -> None:
    setup_plans(conn)
    monkeypatch.setenv("STRIPE_SECRET_KEY", KEY)
    world = StripeWorld()
    with EventsApi(world.new_subscription()) as api:
        result = sync(database_url, api.url, key=None)
    assert result.exit_code == 0, result.output
    assert world_state(conn, world.user_id, world.customer_id)["balance"] == 30



def test_the_fetched_types_are_the_ones_process_stripe_event_dispatches(conn: psycopg.Connection[Any]) -> None:
    source = conn.execute("SELECT pg_get_functiondef('billingdb._dispatch_stripe_event(jsonb, jsonb)'::regprocedure) AS d"
                          ).fetchone()["d"]
    handlers = source[source.index("One handler per type"):]
    dispatched = set(re.findall(r"'((?:customer|invoice|checkout|charge)\.[a-z_.]+)'", handlers))
    assert dispatched == set(HANDLED_EVENT_TYPES)


# -- billingdb serve --sync-events-every ----------------------------------------------------------


def test_serve_syncs_in_the_background_one_sync_at_a_time(
    conn: psycopg.Connection[Any], connect: Any, database_url: str
) -> None:
    setup_plans(conn)
    world = StripeWorld()
    other = connect()  # another sync (a cron job, another serve) holds the lock
    assert other.execute("SELECT public.begin_stripe_event_sync() AS r").fetchone()["r"]["started"] is True
    with EventsApi(world.new_subscription()) as api:
        settings = service.ServiceSettings(
            database_url=database_url, webhook=webhooks.WebhookConfig(secrets=("whsec_background",)),
            event_sync=EventSyncSettings(stripe=StripeConfig(api_key=KEY, api_base=api.url, max_network_retries=0),
                                         every=timedelta(seconds=0.2), first_after=timedelta(0)),
        )
        with TestClient(service.create_app(settings)) as client:
            job = client.app.state.event_sync  # type: ignore[attr-defined]
            _wait_for("two turns", lambda: job.runs >= 2)
            assert api.requests == [] and sync_row(conn) is None  # skipped: the other sync runs
            other.execute("SELECT public.finish_stripe_event_sync(now(), null)")  # the other one ends
            _wait_for("the sync", lambda: world_state(conn, world.user_id, world.customer_id)["balance"] == 30)
            assert client.get("/healthz").status_code == 200
        row = sync_row(conn)
        assert row is not None and row["last_succeeded_at"] is not None and row["last_error"] is None
        runs = job.runs
        time.sleep(0.5)
        assert job.runs == runs  # stopped with the service


def test_workers_keep_one_schedule_not_one_each(
    conn: psycopg.Connection[Any], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: with --workers 2 each worker's thread synced once a period, so Stripe saw N syncs
    a period. A turn that finds the last run (of any worker) started less than the period ago skips."""
    from billingdb.service.background import EventSyncJob

    setup_plans(conn)
    world = StripeWorld()
    with EventsApi(world.new_subscription()) as api:
        settings = EventSyncSettings(stripe=StripeConfig(api_key=KEY, api_base=api.url, max_network_retries=0),
                                     every=timedelta(minutes=1))
        first, second = EventSyncJob(database_url, settings), EventSyncJob(database_url, settings)
        assert first.run_once() is not None
        asked, recorded = len(api.requests), sync_row(conn)
        with caplog.at_level("DEBUG", logger="billingdb.service.event_sync"):
            assert second.run_once() is None  # the other worker's turn, seconds later: not due
        assert len(api.requests) == asked and sync_row(conn) == recorded
        assert any("not due" in r.getMessage() for r in caplog.records)
        # A period later (the last run moved back a minute), the next turn, whichever worker's, runs.
        conn.execute("UPDATE billingdb.stripe_event_sync SET last_started_at = last_started_at - interval '1 minute'")
        assert second.run_once() is not None and len(api.requests) > asked
    assert world_state(conn, world.user_id, world.customer_id)["balance"] == 30


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--sync-events-every", "10s"], {"STRIPE_SECRET_KEY": KEY}, "--sync-events-every '10s': give a period of at least 1m"),
    (["--sync-events-every", "often"], {"STRIPE_SECRET_KEY": KEY}, "--sync-events-every 'often': give a period"),
    (["--sync-events-every", "15m"], {}, "--sync-events-every needs a Stripe API key: set STRIPE_SECRET_KEY"),
    ([], {"BILLINGDB_SYNC_EVENTS_EVERY": "5s", "STRIPE_SECRET_KEY": KEY}, "BILLINGDB_SYNC_EVENTS_EVERY='5s': give"),
    ([], {"BILLINGDB_SYNC_EVENTS_EVERY": "junk", "STRIPE_SECRET_KEY": KEY},
     "error: BILLINGDB_SYNC_EVENTS_EVERY='junk': give a period of at least 1m"),
    ([], {"BILLINGDB_SYNC_EVENTS_EVERY": "15m"}, "BILLINGDB_SYNC_EVENTS_EVERY needs a Stripe API key"),
    (["--sync-events-every", "99999999999d"], {"STRIPE_SECRET_KEY": KEY},
     "--sync-events-every '99999999999d': give a period"),
])
def test_serve_refuses_a_bad_sync_period_or_no_key_in_one_line(
    args: list[str], env: dict[str, str], message: str, database_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--webhook-secret", "whsec_x", *args, "--database-url", database_url])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_serve_logs_a_malformed_page_in_one_line_without_a_traceback(
    conn: psycopg.Connection[Any], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from billingdb.service.background import EventSyncJob

    with EventsApi(StripeWorld().new_subscription()) as api:
        api.faults = [(200, {"object": "list", "url": "/v1/events", "has_more": False, "data": None})]
        job = EventSyncJob(database_url, EventSyncSettings(
            stripe=StripeConfig(api_key=KEY, api_base=api.url, max_network_retries=0), every=timedelta(minutes=1)))
        with caplog.at_level("INFO", logger="billingdb.service.event_sync"):
            assert job.run_once() is None
    records = [r for r in caplog.records if r.name == "billingdb.service.event_sync"]
    assert len(records) == 1 and records[0].exc_info is None, records
    assert records[0].getMessage().startswith("stripe sync-events failed: Stripe's event list page has no data array")
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == 0
    row = sync_row(conn)
    assert row is not None and row["last_succeeded_at"] is None and "no data array" in row["last_error"]


@pytest.mark.parametrize("since", ["30d", "720h", "43200m"])
def test_since_exactly_30_days_back_is_accepted(
    since: str, conn: psycopg.Connection[Any], database_url: str, small_pages: None
) -> None:
    setup_plans(conn)
    world = StripeWorld()
    with EventsApi(world.new_subscription()) as api:
        result = sync(database_url, api.url, "--since", since, "--dry-run")
        assert result.exit_code == 0, result.output
        gte = int(dict(parse_qsl(urlsplit(api.requests[0].path).query))["created[gte]"])
    assert abs(gte - (datetime.now(UTC) - timedelta(days=30)).timestamp()) < 60


def test_since_with_an_offset_is_shown_in_utc(
    conn: psycopg.Connection[Any], database_url: str, small_pages: None
) -> None:
    tokyo = timezone(timedelta(hours=9))
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    with EventsApi(StripeWorld().new_subscription()) as api:
        result = sync(database_url, api.url, "--since", start.astimezone(tokyo).isoformat(), "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"Stripe events since {start:%Y-%m-%d %H:%M:%S} UTC:" in result.output

    future = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
    with EventsApi([]) as api:
        refused = sync(database_url, api.url, "--since", future.astimezone(tokyo).isoformat())
    assert refused.exit_code == 2
    assert refused.output.strip() == f"error: {future:%Y-%m-%d %H:%M} UTC is in the future: there are no events to sync yet"


def test_check_since_reads_the_bounds_in_utc() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    event_sync.check_since(now - event_sync.RETENTION, now)
    with pytest.raises(ValueError, match="2026-11-04 11:59 UTC is older"):
        event_sync.check_since((now - event_sync.RETENTION - timedelta(minutes=1)).astimezone(
            timezone(timedelta(hours=-5))), now)


def test_limit_cuts_what_is_applied_not_what_is_counted(
    conn: psycopg.Connection[Any], database_url: str, small_pages: None
) -> None:
    setup_plans(conn)
    world = StripeWorld()
    events = _life_cycle(world)
    wanted = [e for e in events if e["type"] in HANDLED_EVENT_TYPES]
    process(conn, wanted[-1])  # the newest already received: not new
    new = len(wanted) - 1
    with EventsApi(events) as api:
        dry = sync(database_url, api.url, "--dry-run", "--limit", "3")
        assert dry.exit_code == 0, dry.output
        assert f"dry run: {new} new, nothing applied" in dry.output
        assert f"--limit would apply the 3 oldest and leave {len(wanted) - 3} for the next run" in dry.output
        table = [line.split() for line in dry.output.splitlines() if line.split()[:1] and "." in line.split()[0]]
        assert sum(int(row[1]) for row in table) == len(wanted) and sum(int(row[2]) for row in table) == new

        as_json = sync(database_url, api.url, "--limit", "3", "--json")
        assert as_json.exit_code == 0, as_json.output
        report = json.loads(as_json.output)
    assert report["fetched"] == sum(report["by_type"].values()) == len(wanted)
    assert sum(report["new_by_type"].values()) == new
    assert sum(report["outcomes"].values()) == 3 and report["remaining"] == len(wanted) - 3


def test_a_sync_that_finds_another_running_says_so_in_json(
    conn: psycopg.Connection[Any], connect: Any, database_url: str
) -> None:
    other = connect()
    assert other.execute("SELECT public.begin_stripe_event_sync() AS r").fetchone()["r"]["started"] is True
    with EventsApi(StripeWorld().new_subscription()) as api:
        result = runner.invoke(app, ["stripe", "sync-events", "--json", "--api-key", KEY, "--api-base", api.url,
                                     "--database-url", database_url])
        assert api.requests == []
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped"] is True and report["dry_run"] is False
    assert report["reason"].startswith("another Events API sync is running")


def test_an_unreachable_api_is_one_line_with_its_cause(
    conn: psycopg.Connection[Any], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billingdb.cli import stripe as stripe_cli

    monkeypatch.setattr(stripe_cli, "MAX_NETWORK_RETRIES", 0)
    result = sync(database_url, "http://127.0.0.1:1")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: cannot reach Stripe's API: Unexpected error communicating with Stripe. "
        "(ConnectionError: [Errno 111] Connection refused)"]
    row = sync_row(conn)
    assert row is not None and "[Errno 111] Connection refused" in row["last_error"]
