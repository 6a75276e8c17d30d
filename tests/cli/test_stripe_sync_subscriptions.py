"""`billingdb stripe sync subscriptions [--customer CUS] [--apply]`: Stripe's subscriptions against billingdb's.

Against localstripe (the 2017 API shape: ``plan``, ``subscription.current_period_*``), whose webhooks
billingdb never receives here: the drift is printed, ``--apply`` repairs it and allocates the paid
invoices once, a second run finds no drift, ``--customer`` narrows the listing. Against a stand-in
serving Stripe's own objects in the basil shape (periods on the items, invoices naming their
subscription in ``parent.subscription_details``), over two pages. Bad input (no key, a 401, a
malformed page or object) is one line on stderr, exit 2, and nothing written.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import psycopg
import pytest
import stripe
from events.event_helpers import process, setup_plans, table_contents
from typer.testing import CliRunner

from billingdb.cli import app
from billingdb.testing.stripe import BASIL, DAY, StripeWorld

# The stand-in HTTP server of the API tests (tests/http is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from api_support import Recorded, Reply, StandIn, stripe_error  # noqa: E402

runner = CliRunner()
PLAN = "team_plan_sync"


def _sync(database_url: str, api_base: str, *args: str, api_key: str | None = "sk_test_sync"):  # type: ignore[no-untyped-def]
    key = ["--api-key", api_key] if api_key else []
    return runner.invoke(app, ["stripe", "sync", "subscriptions", *args, *key, "--api-base", api_base,
                               "--database-url", database_url])


def _state(conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any]:
    return conn.execute("SELECT public.get_user_subscription_state(%s) AS s", (user_id,)).fetchone()["s"]


def _activity(conn: psycopg.Connection[Any], kind: str) -> list[dict[str, Any]]:
    return [r["details"] for r in conn.execute(
        "SELECT details FROM billingdb.activity_log WHERE activity_type = %s ORDER BY id", (kind,))]


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return str(lines[0])


# -- localstripe: the 2017 shape -------------------------------------------------------------------


def _localstripe_customer(client: stripe.StripeClient, email: str, user_id: str | None) -> tuple[str, str]:
    """A customer with a card and a Team subscription (its first invoice paid); ``user_id`` in its metadata."""
    card = client.v1.payment_methods.create(params={
        "type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
    })
    customer = client.v1.customers.create(params={
        "email": email, "payment_method": card.id, "invoice_settings": {"default_payment_method": card.id},
    })
    metadata = {"user_id": user_id} if user_id else {}
    subscription = client.v1.subscriptions.create(params={
        "customer": customer.id, "items": [{"plan": PLAN}], "metadata": metadata,
    })
    return customer.id, subscription.id


def test_drift_found_and_repaired_against_localstripe(localstripe_url: str, database_url: str, conn) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SELECT public.set_plan(%s, 'Team', 200)", (PLAN,))
    client = stripe.StripeClient("sk_test_localstripe", base_addresses={"api": localstripe_url},
                                 max_network_retries=0)
    product = client.v1.products.create(params={"name": "Team"})
    client.v1.plans.create(params={"id": PLAN, "product": product.id, "amount": 2999, "currency": "usd",
                                   "interval": "month"})
    # Ada's subscription names her in its metadata; Bob's customer is linked in billingdb.
    ada_customer, ada_sub = _localstripe_customer(client, "ada@example.com", "user_sync_ada")
    bob_customer, bob_sub = _localstripe_customer(client, "bob@example.com", None)
    conn.execute("SELECT public.link_stripe_customer('user_sync_bob', %s)", (bob_customer,))

    # Found, nothing written: both subscriptions are missing here, with their paid first invoices.
    before = table_contents(conn)
    found = _sync(database_url, localstripe_url)
    assert found.exit_code == 1, found.output
    assert "2 listed, 0 in sync, 2 with drift" in found.stdout
    assert ada_sub in found.stdout and bob_sub in found.stdout and "user_sync_ada" in found.stdout
    assert "Paid invoices without an allocation: 2" in found.stdout
    assert "nothing written (run with --apply to repair)" in found.stdout
    assert table_contents(conn) == before

    # --customer: only that customer's subscription.
    one = _sync(database_url, localstripe_url, "--customer", bob_customer, "--json")
    assert one.exit_code == 1, one.output
    report = json.loads(one.stdout)
    assert report["listed"] == 1 and [s["subscription_id"] for s in report["subscriptions"]] == [bob_sub]
    assert report["subscriptions"][0]["fields"]["status"] == [None, "active"]
    assert [i["subscription_id"] for i in report["invoices"]] == [bob_sub]

    # --apply: created through the writer, Ada's customer linked from the metadata, credits allocated once.
    repaired = _sync(database_url, localstripe_url, "--apply")
    assert repaired.exit_code == 0, repaired.output
    assert "applied: 2 subscriptions, 2 invoices; nothing left to repair" in repaired.stdout
    assert "allocated 200 credits" in repaired.stdout
    for user, sub in (("user_sync_ada", ada_sub), ("user_sync_bob", bob_sub)):
        state = _state(conn, user)
        assert (state["status"], state["plan"], state["credits_balance"], state["subscription_id"]) == (
            "active", "Team", 200, sub)
    assert {s["subscription_id"] for s in _activity(conn, "subscription_synced")} == {ada_sub, bob_sub}
    assert len(_activity(conn, "invoice_synced")) == 2

    # A second run finds no drift and writes nothing.
    before = table_contents(conn)
    again = _sync(database_url, localstripe_url)
    assert again.exit_code == 0, again.output
    assert "2 listed, 2 in sync, 0 with drift" in again.stdout and "no drift" in again.stdout
    assert table_contents(conn) == before

    # Ada cancels in Stripe; the event never reaches billingdb: the sync repairs it.
    client.v1.subscriptions.cancel(ada_sub)
    drift = _sync(database_url, localstripe_url, "--customer", ada_customer)
    assert drift.exit_code == 1 and "1 listed, 0 in sync, 1 with drift" in drift.stdout
    status_row = next(line for line in drift.stdout.splitlines() if line.startswith(ada_sub))
    assert status_row.split()[1:5] == ["user_sync_ada", "status", "active", "canceled"], status_row
    fixed = _sync(database_url, localstripe_url, "--customer", ada_customer, "--apply")
    assert fixed.exit_code == 0, fixed.output
    assert _state(conn, "user_sync_ada")["status"] == "canceled"
    assert _state(conn, "user_sync_bob")["status"] == "active"
    assert "no drift" in _sync(database_url, localstripe_url).stdout


# -- a stand-in: the basil shape, pages, bad answers ------------------------------------------------


class SubscriptionsStandIn(StandIn):
    """GET /v1/subscriptions one subscription per page (``customer`` and ``starting_after`` honoured);
    ``answer`` replaces every reply."""

    def __init__(self, subscriptions: list[dict[str, Any]]) -> None:
        self.subscriptions = subscriptions
        self.answer: Reply | None = None
        super().__init__(self._reply)

    def _reply(self, rec: Recorded) -> Reply:
        if self.answer is not None:
            return self.answer
        path, _, query = rec.path.partition("?")
        if rec.method != "GET" or path != "/v1/subscriptions":
            return stripe_error(404, f"Unrecognized request URL ({path})", "invalid_request_error")
        params = dict(parse_qsl(query))
        subs = [s for s in self.subscriptions if params.get("customer") in (None, s["customer"])]
        start = 0
        if "starting_after" in params:
            start = 1 + next(n for n, s in enumerate(subs) if s["id"] == params["starting_after"])
        return 200, {"object": "list", "url": "/v1/subscriptions", "has_more": start + 1 < len(subs),
                     "data": subs[start:start + 1]}


@pytest.fixture
def basil(conn: psycopg.Connection[Any]) -> tuple[StripeWorld, StripeWorld]:
    """Two basil-shaped customers whose webhooks all arrived (active, 30 credits each); then Ada
    cancels at the period end and renews, and those events are lost."""
    setup_plans(conn)
    ada = StripeWorld(api_version=BASIL, now=int(time.time()) - 40 * DAY)
    bob = StripeWorld(api_version=BASIL)
    for world in (ada, bob):
        events = world.new_subscription()
        world.first_invoice_id = events[1]["data"]["object"]["id"]  # type: ignore[attr-defined]
        for event in events:
            process(conn, event)
    ada.cancel_at_end()
    ada.renewal()
    return ada, bob


def _listing(ada: StripeWorld, bob: StripeWorld) -> list[dict[str, Any]]:
    """Ada's subscription has drifted and its renewal invoice was never allocated; Bob's is in sync and
    its latest invoice (the first one) allocated."""
    renewal = ada.invoice("subscription_cycle")
    bob_first = bob.invoice("subscription_create", invoice_id=bob.first_invoice_id)  # type: ignore[attr-defined]
    return [ada.subscription(latest_invoice=renewal), bob.subscription(latest_invoice=bob_first)]


def test_basil_shape_over_pages_drift_repaired(conn, database_url: str, basil) -> None:  # type: ignore[no-untyped-def]
    ada, bob = basil
    with SubscriptionsStandIn(_listing(ada, bob)) as standin:
        found = _sync(database_url, standin.url)
        assert found.exit_code == 1, found.output
        assert "2 listed, 1 in sync, 1 with drift" in found.stdout
        rows = [line.split() for line in found.stdout.splitlines()[2:6]]
        assert rows[0][:3] == [ada.subscription_id, ada.user_id, "current_period_start"]
        assert [r[0] for r in rows[1:]] == ["current_period_end", "cancel_at_period_end", "canceled_at"]
        assert rows[2][1:] == ["false", "true"] and rows[3][1] == "-"
        assert "Paid invoices without an allocation: 1" in found.stdout
        # The whole listing, page by page: every status, latest invoices expanded.
        first, second = standin.requests[0], standin.requests[1]
        assert dict(parse_qsl(first.path.partition("?")[2])) == {
            "status": "all", "limit": "100", "expand[0]": "data.latest_invoice"}
        assert dict(parse_qsl(second.path.partition("?")[2]))["starting_after"] == ada.subscription_id

        repaired = _sync(database_url, standin.url, "--apply")
        assert repaired.exit_code == 0, repaired.output
        assert "applied: 1 subscription, 1 invoice; nothing left to repair" in repaired.stdout
        row = conn.execute("SELECT * FROM billingdb.subscriptions WHERE subscription_id = %s",
                           (ada.subscription_id,)).fetchone()
        assert row["cancel_at_period_end"] is True and row["last_event_id"] is None
        assert int(row["current_period_end"].timestamp()) == ada.period_end
        assert _state(conn, ada.user_id)["credits_balance"] == 60
        assert _state(conn, bob.user_id)["credits_balance"] == 30

        before = table_contents(conn)
        again = _sync(database_url, standin.url, "--apply")
        assert again.exit_code == 0 and "no drift: billingdb agrees with Stripe" in again.stdout, again.output
        assert table_contents(conn) == before


def test_no_api_key(conn, database_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    before = table_contents(conn)
    line = _one_error_line(_sync(database_url, "http://127.0.0.1:9", "--apply", api_key=None))
    assert "no Stripe API key" in line
    assert table_contents(conn) == before


def test_bad_customer_option() -> None:
    line = _one_error_line(_sync("postgresql://127.0.0.1:9/none", "http://127.0.0.1:9", "--customer", "sub_123"))
    assert "--customer must be a Stripe customer id" in line


def test_a_refused_key(conn, database_url: str, basil) -> None:  # type: ignore[no-untyped-def]
    with SubscriptionsStandIn(_listing(*basil)) as standin:
        standin.answer = stripe_error(401, "Invalid API Key provided: sk_test_****sync", "invalid_request_error")
        before = table_contents(conn)
        line = _one_error_line(_sync(database_url, standin.url, "--apply"))
        assert "Stripe refused the API key (401)" in line
        assert table_contents(conn) == before


def _malformed(listing: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    good, other = listing
    no_id = {k: v for k, v in other.items() if k != "id"}
    return [
        ("data not a list", (200, {"object": "list", "data": "nope", "has_more": False})),
        ("not a list page", (200, {"object": "subscription", "id": "sub_1"})),
        ("no has_more", (200, {"object": "list", "data": [good]})),
        ("an item without an id", (200, {"object": "list", "data": [good, no_id], "has_more": False})),
        ("an item that is not a subscription", (200, {"object": "list", "data": [good, {"object": "invoice",
                                                                                         "id": "in_1"}],
                                                     "has_more": False})),
        ("a latest invoice that is not one", (200, {"object": "list", "has_more": False,
                                                    "data": [good, {**other, "latest_invoice": 7}]})),
        # Read by the database: 22023, after the drifted subscription was compared, before any write.
        ("an unknown status", (200, {"object": "list", "data": [good, {**other, "status": "bogus"}],
                                     "has_more": False})),
        ("a period that is no time", (200, {"object": "list", "has_more": False,
                                            "data": [good, {**other, "current_period_end": "soon"}]})),
        ("an invoice without a status", (200, {"object": "list", "has_more": False, "data": [
            good, {**other, "latest_invoice": {**good["latest_invoice"], "id": "in_other", "status": None}}]})),
    ]


def test_a_malformed_page_writes_nothing(conn, database_url: str, basil) -> None:  # type: ignore[no-untyped-def]
    listing = _listing(*basil)
    with SubscriptionsStandIn(listing) as standin:
        for name, answer in _malformed(listing):
            standin.answer = answer
            before = table_contents(conn)
            line = _one_error_line(_sync(database_url, standin.url, "--apply"))
            assert "nothing was written" in line, (name, line)
            assert table_contents(conn) == before, name
        # The second page refused (after the first one was read): nothing written either.
        standin.answer = None

        def second_page_fails(rec: Recorded) -> Reply:
            if "starting_after" in rec.path:
                return stripe_error(400, "No such subscription", "invalid_request_error")
            return SubscriptionsStandIn._reply(standin, rec)

        standin.handler = second_page_fails
        before = table_contents(conn)
        line = _one_error_line(_sync(database_url, standin.url, "--apply"))
        assert "Stripe failed (400): No such subscription" in line
        assert table_contents(conn) == before
