"""GET /stripe/subscription/state and POST /stories/generate-with-credits (the seed's scenario 3).

The generation holds the credits (reserve_credits), runs the generator, then
commits (usage) or releases (credits back); a process that dies in between
leaves a hold that expires and is swept back. Generators: tests/http/api_generators.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import api_generators
import httpx
import psycopg
import pytest
from api_support import (
    AUDIENCE,
    ISSUER,
    USER,
    WEBHOOK_SECRET,
    api_settings,
    auth_config,
    make_app,
    make_subscriber,
)
from helpers import balance, contents, count, subscribe
from starlette.testclient import TestClient

from billingdb.errors import ConfigurationError
from billingdb.service import generation

PATH = "/stories/generate-with-credits"
STORY = {"title": "Test Story", "prompt": "A test story about deployment", "includeImage": True}


def _client(database_url: str, key: Any, generator: Callable[..., Any] = generation.echo,
            hold_ttl: timedelta = timedelta(minutes=5)) -> TestClient:
    return TestClient(make_app(database_url, api_settings(auth_config(key), None, generator, hold_ttl)))


def _ledger(conn: psycopg.Connection[Any], user_id: str = USER) -> list[tuple[str, int]]:
    return [(r["transaction_type"], r["amount"]) for r in conn.execute(
        "SELECT transaction_type, amount FROM public.credit_transactions WHERE user_id = %s ORDER BY id",
        (user_id,),
    )]


def _holds(conn: psycopg.Connection[Any], user_id: str = USER) -> list[dict[str, Any]]:
    return list(conn.execute("SELECT * FROM billingdb.credit_holds WHERE user_id = %s ORDER BY hold_id", (user_id,)))


# -- GET /stripe/subscription/state -------------------------------------------------------------


def test_state_of_the_caller(api_client, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=12)
    r = api_client.get("/stripe/subscription/state", headers=signing_key.bearer(USER))
    assert r.status_code == 200
    state = r.json()
    assert state["user_id"] == USER and state["status"] == "active" and state["plan"] == "Individual"
    assert state["credits_balance"] == 12 and state["can_use_credits"] is True and state["reason"] is None
    again = api_client.get("/stripe/subscription/state", headers=signing_key.bearer(USER)).json()
    assert again["cached"] is True and again["credits_balance"] == 12
    # Another user sees their own (here: nothing).
    other = api_client.get("/stripe/subscription/state", headers=signing_key.bearer("user_nobody")).json()
    assert other["user_id"] == "user_nobody" and other["reason"] == "no_subscription"
    assert other["credits_balance"] == 0 and other["status"] is None


# -- the generation -----------------------------------------------------------------------------


def test_generate_reserves_runs_and_commits(api_client, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    r = api_client.post(PATH, json=STORY, headers=signing_key.bearer(USER))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["credits_used"] == 2 and body["balance"] == 8 and body["replayed"] is False  # story + image
    assert body["result"] == {"title": "Test Story", "story": STORY["prompt"], "include_image": True}
    assert _ledger(api_db)[-3:] == [("hold", -2), ("release", 2), ("usage", -2)]
    hold = _holds(api_db)[0]
    assert hold["status"] == "committed" and hold["hold_id"] == body["hold_id"]
    assert hold["usage_transaction_id"] == body["transaction_id"] and hold["result"] == body["result"]
    assert hold["description"] == "Story generation: Test Story"
    assert hold["metadata"]["operation"] == "generate_story" and len(hold["metadata"]["request_hash"]) == 64
    # Without an image: 1 credit.
    r = api_client.post(PATH, json={"prompt": "short"}, headers=signing_key.bearer(USER))
    assert r.status_code == 200 and r.json()["credits_used"] == 1 and r.json()["balance"] == 7
    state = api_client.get("/stripe/subscription/state", headers=signing_key.bearer(USER)).json()
    assert state["credits_balance"] == 7


def test_the_generator_gets_the_request_and_its_hold(database_url, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    api_generators.CALLS.clear()
    with _client(database_url, signing_key, api_generators.recording) as client:
        r = client.post(PATH, json={"prompt": "abc"}, headers=signing_key.bearer(USER))
    assert r.status_code == 200 and r.json()["result"] == {"story": "ABC", "hold_id": r.json()["hold_id"]}
    [call] = api_generators.CALLS
    assert call.user_id == USER and call.prompt == "abc" and call.title is None and call.include_image is False
    assert call.hold_id == r.json()["hold_id"]


def test_async_generator(database_url, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    with _client(database_url, signing_key, api_generators.async_echo) as client:
        r = client.post(PATH, json={"prompt": "abc"}, headers=signing_key.bearer(USER))
    assert r.status_code == 200 and r.json()["result"] == {"story": "abc", "async": True}


@pytest.mark.parametrize("generator", [api_generators.boom, api_generators.not_json], ids=["raises", "not json"])
def test_a_generator_that_fails_gives_the_credits_back(database_url, api_db, signing_key, generator) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    with _client(database_url, signing_key, generator) as client:
        r = client.post(PATH, json=STORY, headers=signing_key.bearer(USER))
        assert r.status_code == 502, r.text
        body = r.json()
        assert body["error"] == "generation_failed" and body["credits_used"] == 0 and body["balance"] == 10
        assert "given back" in body["message"]
        if generator is api_generators.boom:
            assert "the model is overloaded" in body["message"]
        state = client.get("/stripe/subscription/state", headers=signing_key.bearer(USER)).json()
        assert state["credits_balance"] == 10
    assert balance(api_db, USER) == 10
    assert _ledger(api_db)[-2:] == [("hold", -2), ("release", 2)]
    [hold] = _holds(api_db)
    assert hold["status"] == "released" and hold["reason"].startswith(("RuntimeError", "TypeError"))


def test_insufficient_credits_is_402_with_the_reason(api_client, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=1)
    before = contents(api_db)
    r = api_client.post(PATH, json=STORY, headers=signing_key.bearer(USER))
    assert r.status_code == 402
    body = r.json()
    assert body["error"] == body["reason"] == "insufficient_credits"
    assert body["balance"] == 1 and body["credits_required"] == 2 and body["message"]
    assert contents(api_db) == before and count(api_db, "credit_holds") == 0


@pytest.mark.parametrize(
    ("status", "reason"),
    [(None, "no_subscription"), ("unpaid", "subscription_inactive"), ("paused", "subscription_inactive"),
     ("incomplete", "subscription_inactive")],
)
def test_inactive_subscription_is_403_with_the_reason(api_client, api_db, signing_key, status, reason) -> None:  # type: ignore[no-untyped-def]
    if status:
        make_subscriber(api_db, credits=10, status=status)
    before = contents(api_db)
    r = api_client.post(PATH, json=STORY, headers=signing_key.bearer(USER))
    assert r.status_code == 403 and r.json()["error"] == r.json()["reason"] == reason, r.text
    assert r.json()["message"]
    assert contents(api_db) == before and count(api_db, "credit_holds") == 0


def test_canceled_subscription_spends_until_the_period_end(api_client, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    """The seed's scenario 4: canceled, credits usable until the period ends; then 403 period_ended."""
    make_subscriber(api_db, credits=10)
    subscribe(api_db, USER, "canceled", price_id="price_api_individual", canceled_at=None)
    assert api_client.post(PATH, json=STORY, headers=signing_key.bearer(USER)).status_code == 200
    ended = api_db.execute("SELECT now() - interval '1 day' AS t").fetchone()["t"]
    subscribe(api_db, USER, "canceled", price_id="price_api_individual", period_end=ended)
    r = api_client.post(PATH, json=STORY, headers=signing_key.bearer(USER))
    assert r.status_code == 403 and r.json()["reason"] == "period_ended"


BAD = [
    pytest.param({}, id="no prompt"),
    pytest.param({"prompt": "   "}, id="blank prompt"),
    pytest.param({"prompt": 5}, id="prompt not a string"),
    pytest.param({"prompt": "x" * 4001}, id="prompt too long"),
    pytest.param({"prompt": "x", "title": 3}, id="title not a string"),
    pytest.param({"prompt": "x", "title": "t" * 201}, id="title too long"),
    pytest.param({"prompt": "x", "includeImage": "yes"}, id="includeImage not a boolean"),
    pytest.param(["x"], id="array"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("body", BAD)
def test_bad_bodies_are_400_and_change_nothing(api_client, api_db, signing_key, body) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    before = contents(api_db)
    r = api_client.post(PATH, json=body, headers=signing_key.bearer(USER))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    assert contents(api_db) == before


@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "tab\there"], ids=["empty", "blank", "too long", "control"])
def test_bad_idempotency_keys_are_400(api_client, api_db, signing_key, key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    before = contents(api_db)
    r = api_client.post(PATH, json=STORY, headers={**signing_key.bearer(USER), "Idempotency-Key": key})
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["message"]
    assert contents(api_db) == before


# -- Idempotency-Key ----------------------------------------------------------------------------


def test_a_retry_returns_the_first_result_and_charges_once(api_client, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    headers = {**signing_key.bearer(USER), "Idempotency-Key": "story-1"}
    first = api_client.post(PATH, json=STORY, headers=headers)
    again = api_client.post(PATH, json=STORY, headers=headers)
    assert first.status_code == again.status_code == 200
    a, b = first.json(), again.json()
    assert b["replayed"] is True and a["replayed"] is False
    for k in ("hold_id", "credits_used", "transaction_id", "result", "balance"):
        assert a[k] == b[k], k
    assert balance(api_db, USER) == 8 and count(api_db, "credit_holds") == 1
    # The same key with another body is refused; another key is a new generation.
    other = api_client.post(PATH, json={**STORY, "prompt": "different"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    new = api_client.post(PATH, json=STORY, headers={**headers, "Idempotency-Key": "story-2"})
    assert new.status_code == 200 and new.json()["balance"] == 6
    # Keys belong to their user: another user's "story-1" is their own.
    make_subscriber(api_db, "user_b", credits=5)
    theirs = api_client.post(PATH, json=STORY, headers={**signing_key.bearer("user_b"), "Idempotency-Key": "story-1"})
    assert theirs.status_code == 200 and theirs.json()["replayed"] is False and theirs.json()["balance"] == 3


def test_a_retry_of_a_failed_generation_returns_the_failure(database_url, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    headers = {**signing_key.bearer(USER), "Idempotency-Key": "fails"}
    with _client(database_url, signing_key, api_generators.boom) as client:
        first = client.post(PATH, json=STORY, headers=headers)
    with _client(database_url, signing_key) as client:  # the generator works again: the key's outcome stands
        again = client.post(PATH, json=STORY, headers=headers)
    assert first.status_code == again.status_code == 502
    assert again.json()["replayed"] is True and again.json()["hold_id"] == first.json()["hold_id"]
    assert balance(api_db, USER) == 10


def test_a_retry_while_the_first_runs_is_409(api_client, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    # The first request's hold, still held (its process is busy generating).
    api_db.execute("SELECT public.reserve_credits(%s, 2, interval '5 minutes', 'busy', metadata => %s)",
                   (USER, psycopg.types.json.Jsonb({"request_hash": generation._fingerprint(
                       generation.parse_generation_request(USER, STORY))})))
    r = api_client.post(PATH, json=STORY, headers={**signing_key.bearer(USER), "Idempotency-Key": "busy"})
    assert r.status_code == 409 and r.json()["error"] == "request_in_progress" and r.json()["expires_at"]
    assert balance(api_db, USER) == 8


def test_a_retry_after_the_first_died_is_409_hold_expired(api_client, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=10)
    api_db.execute("SELECT public.reserve_credits(%s, 2, interval '50 milliseconds', 'died')", (USER,))
    time.sleep(0.1)
    assert api_db.execute("SELECT public.release_expired_credit_holds() AS n").fetchone()["n"] == 1
    r = api_client.post(PATH, json=STORY, headers={**signing_key.bearer(USER), "Idempotency-Key": "died"})
    assert r.status_code == 409 and r.json()["error"] == "hold_expired" and r.json()["balance"] == 10


def test_a_generation_that_outlives_its_hold_charges_nothing(database_url, api_db, signing_key, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The hold expires while the generator runs and the sweep gives the credits back: 409, nothing charged."""
    make_subscriber(api_db, credits=10)
    monkeypatch.setenv("API_TEST_SLOW_SECONDS", "0.6")
    with _client(database_url, signing_key, api_generators.slow, hold_ttl=timedelta(milliseconds=200)) as client:
        def sweep() -> None:
            time.sleep(0.4)
            with psycopg.connect(database_url, autocommit=True) as c:
                c.execute("SELECT public.release_expired_credit_holds()")

        sweeper = threading.Thread(target=sweep)
        sweeper.start()
        r = client.post(PATH, json=STORY, headers=signing_key.bearer(USER))
        sweeper.join()
    assert r.status_code == 409 and r.json()["error"] == "hold_expired", r.text
    assert balance(api_db, USER) == 10 and _holds(api_db)[0]["status"] == "expired"


# -- a process that never commits ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_dies_mid_generation_loses_no_credits(database_url, api_db, signing_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`billingdb serve` with a generator that kills the process after the hold: the hold expires, the sweep
    (as `billingdb maintenance run` or pg_cron would) gives the credits back, the ledger stays balanced."""
    make_subscriber(api_db, credits=10)
    port = _free_port()
    here = str(Path(__file__).parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p),
        "BILLINGDB_JWT_PUBLIC_KEY": signing_key.public_pem,
        "BILLINGDB_JWT_ISSUER": ISSUER,
        "BILLINGDB_JWT_AUDIENCE": AUDIENCE,
        "BILLINGDB_GENERATOR": "api_generators:crash",
        "BILLINGDB_HOLD_TTL": "1",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "billingdb", "serve", "--database-url", database_url, "--port", str(port),
         "--log-level", "warning", "--workers", "1"],  # the one process dies (with workers, only a worker would)
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()  # type: ignore[union-attr]
            time.sleep(0.1)
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{base}{PATH}", json=STORY, headers=signing_key.bearer(USER), timeout=10)
        assert proc.wait(10) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # The credits are held, not lost: out of the balance, in a hold nobody will settle.
    [hold] = _holds(api_db)
    assert hold["status"] == "held" and hold["amount"] == 2 and balance(api_db, USER) == 8
    assert api_db.execute("SELECT public.release_expired_credit_holds() AS n").fetchone()["n"] == 0  # not yet
    time.sleep(max(0.0, (hold["expires_at"] - api_db.execute("SELECT now() AS t").fetchone()["t"]).total_seconds())
               + 0.1)
    assert api_db.execute("SELECT public.release_expired_credit_holds() AS n").fetchone()["n"] == 1
    assert balance(api_db, USER) == 10
    assert _holds(api_db)[0]["status"] == "expired"
    assert _ledger(api_db)[-2:] == [("hold", -2), ("release", 2)]


# -- configuration ------------------------------------------------------------------------------


def test_generation_config_from_env() -> None:
    cfg = generation.GenerationConfig.from_env({})
    assert cfg.generator is generation.echo and cfg.cost(False) == 1 and cfg.cost(True) == 2
    assert cfg.hold_ttl == timedelta(minutes=5)
    cfg = generation.GenerationConfig.from_env({
        "BILLINGDB_GENERATOR": "api_generators:boom", "BILLINGDB_STORY_CREDITS": "3",
        "BILLINGDB_IMAGE_CREDITS": "0", "BILLINGDB_HOLD_TTL": "90",
    })
    assert cfg.generator is api_generators.boom and cfg.cost(True) == 3 and cfg.hold_ttl == timedelta(seconds=90)
    assert generation.GenerationConfig.from_env({}, generator="api_generators:slow").generator is api_generators.slow


@pytest.mark.parametrize(
    "env",
    [
        {"BILLINGDB_GENERATOR": "no_colon"},
        {"BILLINGDB_GENERATOR": "no_such_module_xyz:f"},
        {"BILLINGDB_GENERATOR": "api_generators:missing"},
        {"BILLINGDB_GENERATOR": "api_generators:CALLS"},
        {"BILLINGDB_STORY_CREDITS": "0"},
        {"BILLINGDB_STORY_CREDITS": "two"},
        {"BILLINGDB_HOLD_TTL": "0"},
        {"BILLINGDB_HOLD_TTL": "100000"},
    ],
)

def test_generation_config_refuses_bad_settings(env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError):
        generation.GenerationConfig.from_env(env)
