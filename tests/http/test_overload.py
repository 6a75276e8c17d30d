"""Graceful overload: past ``max_in_flight`` deliveries being handled, ``billingdb serve`` answers 503
with Retry-After at once instead of queueing, and nothing is lost when the refused deliveries come
again (as Stripe redelivers every event not answered 2xx)."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import httpx
import psycopg
from api_support import uvicorn_server
from events.event_helpers import setup_plans, world_state

from billingdb import service, webhooks
from billingdb.testing.stripe import SECRET, StripeWorld, encode, sign

SENDERS = 24


def _deliver(url: str, event: dict[str, Any], client: httpx.Client) -> tuple[int, dict[str, Any], float, str | None]:
    body = encode(event)
    started = time.perf_counter()
    answer = client.post(f"{url}{service.WEBHOOK_PATH}", content=body,
                         headers={"stripe-signature": sign(body), "content-type": "application/json"})
    return answer.status_code, answer.json(), time.perf_counter() - started, answer.headers.get("retry-after")


def test_past_max_in_flight_deliveries_get_a_fast_503_and_none_is_lost(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    setup_plans(conn)
    worlds = [StripeWorld(user_in_metadata=True) for _ in range(16)]
    events = [e for w in worlds for e in w.new_subscription()]
    app = service.create_app(service.ServiceSettings(
        database_url=database_url, webhook=webhooks.WebhookConfig(secrets=(SECRET,)), pool_max=2, max_in_flight=3,
    ))
    answers: dict[str, tuple[int, dict[str, Any], float, str | None]] = {}
    with uvicorn_server(app) as url:
        # Every event offered at once by many senders: several times what 3 deliveries in flight can take.
        todo = list(events)
        lock = threading.Lock()

        def sender() -> None:
            with httpx.Client(timeout=30) as client:
                while True:
                    with lock:
                        if not todo:
                            return
                        event = todo.pop()
                    answers[event["id"]] = _deliver(url, event, client)

        threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        refused = [e for e in events if answers[e["id"]][0] == 503]
        accepted = [e for e in events if answers[e["id"]][0] == 200]
        assert refused and accepted and len(refused) + len(accepted) == len(events), {
            e["id"]: answers[e["id"]][:2] for e in events if answers[e["id"]][0] not in (200, 503)}
        for event in refused:
            status, body, _, retry_after = answers[event["id"]]
            assert body["error"] == "overloaded" and retry_after == str(service.app.RETRY_AFTER_SECONDS)
        # A refusal is answered at once, faster than a processed delivery.
        fast = statistics.median(answers[e["id"]][2] for e in refused)
        slow = statistics.median(answers[e["id"]][2] for e in accepted)
        assert fast < slow and fast < 0.5, (fast, slow)
        # Each accepted delivery was processed once (none a duplicate; stale: an older update after a newer
        # one of the same subscription); a refused one was not recorded.
        assert {answers[e["id"]][1]["status"] for e in accepted} <= {"processed", "pending", "stale"}
        recorded = {r["stripe_event_id"] for r in conn.execute("SELECT stripe_event_id FROM public.stripe_events")}
        assert recorded == {e["id"] for e in accepted}

        # Stripe delivers the refused events again, later: all accepted now.
        with httpx.Client(timeout=30) as client:
            again = [_deliver(url, e, client) for e in refused]
        assert {status for status, *_ in again} == {200}

    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events WHERE NOT processed").fetchone()["n"] == 0
    for w in worlds:
        assert world_state(conn, w.user_id, w.customer_id)["balance"] == 30


def test_stalled_senders_do_not_take_the_deliveries_slots(conn: psycopg.Connection[Any], database_url: str) -> None:
    """Found by review: a request took a slot before its body arrived, so two idle connections held
    --max-in-flight 2 and every real delivery got 503. Now only a delivery whose body has arrived counts,
    and a body that does not arrive within body_timeout is a 408."""
    import socket

    setup_plans(conn)
    world = StripeWorld(user_in_metadata=True)
    app = service.create_app(service.ServiceSettings(
        database_url=database_url, webhook=webhooks.WebhookConfig(secrets=(SECRET,)), pool_max=2, max_in_flight=2,
        body_timeout=2.0,
    ))
    with uvicorn_server(app) as url, httpx.Client(timeout=30) as client:
        host, port = url.removeprefix("http://").split(":")
        stalled = []
        for _ in range(4):  # more stalled senders than slots, each with a partial body and no signature
            s = socket.create_connection((host, int(port)))
            s.sendall(f"POST {service.WEBHOOK_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                      "Content-Length: 1000\r\n\r\n{\"id\":".encode())
            stalled.append(s)
        time.sleep(0.3)
        started = time.monotonic()
        statuses = [_deliver(url, event, client)[0] for event in world.new_subscription()]
        assert statuses == [200] * len(statuses)
        assert time.monotonic() - started < 2.0  # they did not wait for the stalled bodies
        for s in stalled:
            s.settimeout(10)
            answer = ""
            while "body_timeout" not in answer and (chunk := s.recv(4096)):  # headers and body may come apart
                answer += chunk.decode()
            assert answer.startswith("HTTP/1.1 408") and "body_timeout" in answer, answer
            s.close()
    assert world_state(conn, world.user_id, world.customer_id)["balance"] == 30
