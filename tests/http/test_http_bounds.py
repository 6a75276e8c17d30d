"""Bounded, clear input over HTTP: a 4xx with a reason for every body PostgreSQL could not take, never a
500 or a 503, and no row changed; a credit hold never stays stuck when the work after it fails."""

from __future__ import annotations

import time
from typing import Any

import api_generators
import pytest
from api_support import USER, api_settings, auth_config, make_app, make_subscriber
from events.event_helpers import setup_plans
from helpers import balance, contents
from starlette.testclient import TestClient

from billingdb import service, webhooks
from billingdb.testing.stripe import SECRET, encode, sign

GENERATE = "/stories/generate-with-credits"
STORY = {"title": "Test Story", "prompt": "A test story about deployment", "includeImage": True}


def _deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


@pytest.fixture
def webhook_client(database_url: str, conn) -> Any:  # type: ignore[no-untyped-def]
    setup_plans(conn)
    settings = service.ServiceSettings(
        database_url=database_url, webhook=webhooks.WebhookConfig(secrets=(SECRET,)), pool_max=2,
    )
    with TestClient(service.create_app(settings)) as client:
        yield client


def _post_event(client: TestClient, body: bytes, timestamp: int | None = None) -> Any:
    return client.post(service.WEBHOOK_PATH, content=body, headers={
        "content-type": "application/json", "stripe-signature": sign(body, timestamp=timestamp),
    })


def _event(event_id: str = "evt_bounds_1", **obj: Any) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": "invoice.paid", "created": int(time.time()),
            "api_version": "2024-06-20", "data": {"object": {"id": "in_1", "customer": "cus_x", **obj}}}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_deep(5000), "too_deep"),
        (encode(_event(note="a\x00b")), "nul_character"),
        (b'{"id": "evt_1", "type": "x\\u0000", "created": 1, "data": {"object": {}}}', "nul_character"),
        (encode(_event("evt_" + "x" * 3000)), "invalid_event"),
        (encode({**_event(), "data": {"object": {"id": "in_1", "customer": "cus_" + "y" * 3000}}}), "invalid_event"),
    ],
    ids=["nested 5000 deep", "NUL in a value", "NUL escape in the type", "event id beyond the index",
         "customer id beyond the index"],
)
def test_a_webhook_body_postgres_cannot_take_is_400(webhook_client, conn, body, code) -> None:  # type: ignore[no-untyped-def]
    before = contents(conn)
    events = conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()
    r = _post_event(webhook_client, body)
    assert r.status_code == 400 and r.json()["error"] == code, r.text
    assert contents(conn) == before
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone() == events


def test_a_literal_backslash_u0000_text_is_not_a_nul(webhook_client, conn) -> None:  # type: ignore[no-untyped-def]
    r = _post_event(webhook_client, encode({**_event(), "type": "product.created", "data": {"object": {
        "id": "prod_1", "description": "escaped \\u0000 is text"}}}))
    assert r.status_code == 200 and r.json()["status"] == "ignored", r.text


@pytest.mark.parametrize("offset", [3600, -3600], ids=["an hour ahead", "an hour old"])
def test_a_signed_webhook_outside_the_tolerance_is_refused(webhook_client, conn, offset) -> None:  # type: ignore[no-untyped-def]
    before = contents(conn)
    r = _post_event(webhook_client, encode(_event()), timestamp=int(time.time()) + offset)
    assert r.status_code == 400 and r.json()["error"] == "bad_signature", r.text
    assert contents(conn) == before


# -- the application API ------------------------------------------------------------------------


def _client(database_url: str, key: Any, generator: Any = None) -> TestClient:
    from billingdb.service import generation

    return TestClient(make_app(database_url, api_settings(auth_config(key), None, generator or generation.echo)))


@pytest.mark.parametrize(
    "body",
    [_deep(5000), b'{"title": "T", "prompt": "a\\u0000b", "includeImage": true}'],
    ids=["nested 5000 deep", "NUL in the prompt"],
)
def test_an_api_body_postgres_cannot_take_is_400(database_url, api_db, signing_key, body) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    before = contents(api_db)
    with _client(database_url, signing_key) as client:
        r = client.post(GENERATE, content=body, headers={**signing_key.bearer(USER), "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert contents(api_db) == before


def test_the_same_key_with_another_cost_is_422(database_url, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    headers = {**signing_key.bearer(USER), "Idempotency-Key": "story-cost"}
    with _client(database_url, signing_key) as client:
        first = client.post(GENERATE, json=STORY, headers=headers)
        assert first.status_code == 200, first.text
        before = contents(api_db)
        other = client.post(GENERATE, json={**STORY, "includeImage": False}, headers=headers)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused", other.text
    assert contents(api_db) == before


@pytest.mark.parametrize("generator", [api_generators.nul_output, api_generators.too_deep_output],
                         ids=["NUL in the output", "output nested too deeply"])
def test_output_the_database_refuses_releases_the_hold(database_url, api_db, signing_key, generator) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    with _client(database_url, signing_key, generator) as client:
        r = client.post(GENERATE, json=STORY, headers=signing_key.bearer(USER))
    assert r.status_code == 502 and r.json()["error"] == "generation_failed", r.text
    assert "cannot be stored" in r.json()["message"]
    holds = api_db.execute("SELECT status, reason FROM billingdb.credit_holds WHERE user_id = %s", (USER,)).fetchall()
    assert [h["status"] for h in holds] == ["released"] and "cannot be stored" in holds[0]["reason"]
    assert balance(api_db, USER) == 10
