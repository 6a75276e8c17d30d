"""POST /stripe/webhook end to end: signed requests through the Starlette app to the database.

The seed's four scenarios in both API shapes, every event delivered twice; a
table of bad requests, each with its status code and the rows it may change;
secret rotation; GET /healthz.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from events.event_helpers import (
    BILLING_TABLES,
    event_row,
    setup_plans,
    table_contents,
    world_state,
)
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from billingdb import service, webhooks
from billingdb.testing.stripe import SECRET, SHAPES, StripeWorld, encode, sign

OLD_SECRET = "whsec_old_rotated_out_0000000000"
MAX_BODY = 64 * 1024

shapes = pytest.mark.parametrize("shape", SHAPES, ids=["pre-basil", "basil"])


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    setup_plans(conn)
    return conn


@pytest.fixture
def client(database_url: str, db: psycopg.Connection[Any]) -> Iterator[TestClient]:
    settings = service.ServiceSettings(
        database_url=database_url,
        webhook=webhooks.WebhookConfig(secrets=(SECRET, OLD_SECRET), max_body=MAX_BODY),
        pool_max=4,
    )
    with TestClient(service.create_app(settings)) as c:
        yield c


def post(client: TestClient, body: bytes, signature: str | None = "sign", **headers: str) -> Any:
    h = {"content-type": "application/json", **headers}
    if signature == "sign":
        h["stripe-signature"] = sign(body)
    elif signature is not None:
        h["stripe-signature"] = signature
    return client.post(service.WEBHOOK_PATH, content=body, headers=h)


def deliver(client: TestClient, event: dict[str, Any]) -> dict[str, Any]:
    """Deliver twice, as Stripe may: a done event answers 200 duplicate, a pending one stays pending."""
    first = post(client, encode(event))
    again = post(client, encode(event))
    expected = "pending" if first.json()["status"] == "pending" else "duplicate"
    assert again.status_code == 200 and again.json()["status"] == expected, again.text
    assert first.json()["event_id"] == event["id"]
    return {"code": first.status_code, **first.json()}


# -- the seed's four scenarios ---------------------------------------------


@shapes
def test_seed_scenarios_over_http(client, db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)

    # 1. New subscription: Checkout completes; events arrive (checkout last: the others wait as pending).
    results = [deliver(client, e) for e in w.new_subscription()]
    assert [r["code"] for r in results] == [200] * 5
    assert [r["status"] for r in results] == ["pending"] * 4 + ["processed"]
    state = world_state(db, w.user_id, w.customer_id)
    assert state["state"]["status"] == "active" and state["state"]["can_use_credits"] is True
    assert state["balance"] == 30 and state["events_not_done"] == 0
    cache = db.execute("SELECT status FROM public.subscription_cache WHERE user_id = %s", (w.user_id,)).fetchone()
    assert cache["status"] == "active"

    # 2. Monthly renewal: credits allocated once for the invoice, activity logged.
    results = [deliver(client, e) for e in w.renewal()]
    assert [r["status"] for r in results] == ["processed", "ignored", "processed", "processed"]
    state = world_state(db, w.user_id, w.customer_id)
    assert state["balance"] == 60
    assert [t["billing_reason"] for t in state["ledger"]] == ["subscription_create", "subscription_cycle"]
    assert db.execute(
        "SELECT count(*) AS n FROM billingdb.activity_log WHERE user_id = %s AND activity_type = 'credits_allocated'",
        (w.user_id,),
    ).fetchone()["n"] == 2

    # 3. Credit usage: the state allows it, credits are deducted, refunded when the generation fails.
    used = db.execute("SELECT public.use_credits_validated(%s, 10, 'story with image') AS r",
                      (w.user_id,)).fetchone()["r"]
    assert used["success"] is True and used["balance"] == 50
    refund = db.execute("SELECT public.refund_credits(%s, 'generation failed') AS r",
                        (used["transaction_id"],)).fetchone()["r"]
    assert refund["success"] is True and refund["balance"] == 60

    # 4. Cancellation: canceled in the cache, credits usable until the period ends.
    results = [deliver(client, e) for e in w.cancel_now()]
    assert [r["status"] for r in results] == ["processed"]
    state = world_state(db, w.user_id, w.customer_id)
    assert state["state"]["status"] == "canceled" and state["state"]["can_use_credits"] is True
    cache = db.execute("SELECT status FROM public.subscription_cache WHERE user_id = %s", (w.user_id,)).fetchone()
    assert cache["status"] == "canceled"
    used = db.execute("SELECT public.use_credits_validated(%s, 1, 'after cancel') AS r", (w.user_id,)).fetchone()["r"]
    assert used["success"] is True


@shapes
def test_failed_payment_over_http(client, db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    for e in w.new_subscription():
        deliver(client, e)
    results = [deliver(client, e) for e in w.failed_renewal()]
    assert [r["code"] for r in results] == [200, 200, 200]
    assert world_state(db, w.user_id, w.customer_id)["state"]["status"] == "past_due"


def test_secret_rotation_accepts_old_and_new(client, db) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld()
    for secret in (SECRET, OLD_SECRET):
        event = w.event("plan.created", {"id": "price_x", "object": "plan"})
        body = encode(event)
        r = post(client, body, signature=sign(body, secret))
        assert r.status_code == 200 and r.json()["status"] == "ignored"
    # A header with several v1 signatures (Stripe during its own rotation): one valid is enough.
    event = w.event("plan.created", {"id": "price_y", "object": "plan"})
    body = encode(event)
    good = sign(body)
    ts, v1 = good.split(",")
    r = post(client, body, signature=f"{ts},v1={'0' * 64},{v1}")
    assert r.status_code == 200


# -- bad requests ----------------------------------------------------------

NOTHING = frozenset()
EVENT_ROW = frozenset({"stripe_events"})


def _event(**changes: Any) -> dict[str, Any]:
    w = StripeWorld(customer_id="cus_badinput", user_id="user_badinput")
    e = w.event("invoice.paid", w.invoice("subscription_create"))
    for key, value in changes.items():
        if value is DELETE:
            e.pop(key, None)
        else:
            e[key] = value
    return e


DELETE = object()


def _unknown_price() -> dict[str, Any]:
    w = StripeWorld(customer_id="cus_badinput", user_id="user_badinput", price_id="price_nobody_sells")
    return w.event("invoice.paid", w.invoice("subscription_cycle"))


def _case(body: bytes | str, signature: str | None = "sign") -> tuple[bytes, str | None]:
    raw = body.encode() if isinstance(body, str) else body
    return raw, signature


def _expired(body: bytes) -> str:
    return sign(body, timestamp=int(time.time()) - 301)


def _no_data_object() -> dict[str, Any]:
    e = _event()
    del e["data"]["object"]
    return e


# name -> (body, signature: "sign" | None | a header | callable(body) -> header, status, tables that may change)
BAD_INPUT: dict[str, tuple[Any, Any, int, frozenset[str]]] = {
    "missing signature": (_event(), None, 400, NOTHING),
    "empty signature": (_event(), "", 400, NOTHING),
    "garbage signature": (_event(), "not-a-signature", 400, NOTHING),
    "wrong secret": (_event(), lambda b: sign(b, "whsec_someone_else"), 400, NOTHING),
    "signature of another body": (_event(), lambda b: sign(b + b" "), 400, NOTHING),
    "expired signature": (_event(), _expired, 400, NOTHING),
    "no v1 scheme": (_event(), lambda b: sign(b).replace("v1=", "v0="), 400, NOTHING),
    "not JSON": ("{this is not json", "sign", 400, NOTHING),
    "not UTF-8": (b"\xff\xfe{}", lambda b: "t=1,v1=00", 400, NOTHING),
    "JSON array": ("[]", "sign", 400, NOTHING),
    "JSON NaN": ('{"id": "evt_1", "type": "x", "created": NaN, "data": {"object": {}}}', "sign", 400, NOTHING),
    "NUL character": ('{"id": "evt_nul", "type": "x\\u0000", "created": 1, "data": {"object": {}}}', "sign", 400,
                      NOTHING),
    "missing id": (_event(id=DELETE), "sign", 400, NOTHING),
    "id not a string": (_event(id=12345), "sign", 400, NOTHING),
    "missing type": (_event(type=DELETE), "sign", 400, NOTHING),
    "type not a string": (_event(type=None), "sign", 400, NOTHING),
    "missing created": (_event(created=DELETE), "sign", 400, NOTHING),
    "created not an integer": (_event(created="yesterday"), "sign", 400, NOTHING),
    "missing data.object": (_no_data_object(), "sign", 400, NOTHING),
    "data not an object": (_event(data=[1]), "sign", 400, NOTHING),
    "api_version not a string": (_event(api_version=2025), "sign", 400, NOTHING),
    "oversized": (_event(padding="x" * MAX_BODY), "sign", 413, NOTHING),
    "unknown type": (_event(type="balance.available"), "sign", 200, EVENT_ROW),
    "unknown customer": (_event(), "sign", 200, EVENT_ROW),
    "unknown price": (_unknown_price(), "sign", 500, EVENT_ROW),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input(client, db, case) -> None:  # type: ignore[no-untyped-def]
    body, signature, status, may_change = BAD_INPUT[case]
    if case == "unknown price":
        db.execute("SELECT public.link_stripe_customer('user_badinput', 'cus_badinput')")
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    raw = raw.encode() if isinstance(raw, str) else raw
    header = signature(raw) if callable(signature) else signature
    before = table_contents(db)
    r = post(client, raw, signature=header)
    assert r.status_code == status, r.text
    after = table_contents(db)
    changed = {t for t in BILLING_TABLES if before[t] != after[t]}
    assert changed <= may_change, changed
    if status >= 400 and status != 500:
        assert r.json()["error"] in {"missing_signature", "bad_signature", "malformed_body", "malformed_json",
                                     "nul_character", "too_deep",
                                     "invalid_event", "payload_too_large"}
        assert changed == set()
    if may_change:
        row = event_row(db, body["id"])
        assert row is not None
        expected = {200: ("ignored", "pending"), 500: ("failed",)}[status]
        assert row["status"] in expected and r.json()["status"] == row["status"]
        if status == 500:
            assert (row["retry_count"], row["processed"]) == (1, False)
            assert r.json()["detail"]["sqlstate"] == "BD003"


def test_oversized_chunked_body_is_refused_without_content_length(client, db) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(_event(padding="y" * (2 * MAX_BODY))).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    before = table_contents(db)
    r = client.post(service.WEBHOOK_PATH, content=chunks(), headers={"stripe-signature": sign(body)})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert table_contents(db) == before


def test_lying_content_length_is_refused_early(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post(service.WEBHOOK_PATH, content=b"{}", headers={"content-length": str(10 * MAX_BODY)})
    assert r.status_code == 413


def test_get_is_not_allowed(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get(service.WEBHOOK_PATH).status_code == 405


# -- health ----------------------------------------------------------------


def test_healthz_ok(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["database"].startswith("PostgreSQL")


def test_healthz_and_webhook_when_the_database_is_down() -> None:
    settings = service.ServiceSettings(
        database_url="postgresql://nobody@127.0.0.1:1/unreachable",
        webhook=webhooks.WebhookConfig(secrets=(SECRET,)),
        health_timeout=0.5,
        pool_timeout=0.5,
    )
    with TestClient(service.create_app(settings)) as c:
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        # The real cause, not the pool's "couldn't get a connection after 0.50 sec".
        assert "refused" in r.json()["database"] and "couldn't get a connection" not in r.json()["database"], r.text
        body = encode(StripeWorld().event("plan.created", {"id": "price_z", "object": "plan"}))
        # Refused requests never need the database; valid ones fail with a 5xx so Stripe retries.
        assert post(c, body, signature=None).status_code == 400
        r = post(c, body)
        assert r.status_code == 503 and r.json()["error"] == "database_unavailable"


def test_healthz_is_503_on_a_database_without_billingdbs_schema(empty_database_url: str) -> None:
    """Found by review: /healthz said ok on a database where every webhook failed with a 500 (no
    process_stripe_event): a load balancer kept sending Stripe's deliveries there."""
    settings = service.ServiceSettings(database_url=empty_database_url, webhook=webhooks.WebhookConfig(secrets=(SECRET,)))
    with TestClient(service.create_app(settings)) as c:
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        assert "schema is not installed" in r.json()["database"] and "billingdb db upgrade" in r.json()["database"]


def test_webhook_config_rejects_missing_secrets() -> None:
    with pytest.raises(ValueError):
        webhooks.WebhookConfig(secrets=())
    with pytest.raises(ValueError):
        webhooks.WebhookConfig(secrets=(" ",))
    assert webhooks.secrets_from_env(" whsec_a, ,whsec_b ") == ("whsec_a", "whsec_b")
    assert webhooks.secrets_from_env(None) == ()


def test_rows_written_by_http_match_direct_sql(client, database_url) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld()
    event = w.event("plan.created", {"id": "price_w", "object": "plan"})
    r = post(client, encode(event))
    assert r.status_code == 200
    with psycopg.connect(database_url, row_factory=dict_row) as c:
        row = event_row(c, event["id"])
    assert row["payload"] == event and row["status"] == "ignored"
