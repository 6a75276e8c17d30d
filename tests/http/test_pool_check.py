"""The service's pool checks a connection (one round trip) only when it sat idle for a while: under
load the check was one extra round trip per request. A connection that broke while idle is found and
replaced before it serves a request."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from billingdb import service, webhooks
from billingdb.service import app as app_module


def _terminate_others(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    return int(row["n"])


def test_an_idle_connection_that_broke_is_replaced_before_it_serves(
    conn: psycopg.Connection[Any], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = 0.2  # without the check (a larger value), the broken connection answers 503
    monkeypatch.setattr(app_module, "CHECK_IDLE_SECONDS", idle)
    settings = service.ServiceSettings(database_url=database_url, webhook=webhooks.WebhookConfig(secrets=("whsec_x",)),
                                       pool_min=1, pool_max=1)
    with TestClient(service.create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert _terminate_others(conn) >= 1  # the server side of the pool's connection is gone
        time.sleep(idle * 2)
        answer = client.get("/healthz")
        assert answer.status_code == 200, answer.json()


def test_a_recently_used_connection_is_not_checked(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[Any] = []
    monkeypatch.setattr(app_module.ConnectionPool, "check_connection", staticmethod(lambda c: checks.append(c)))
    settings = service.ServiceSettings(database_url=database_url, webhook=webhooks.WebhookConfig(secrets=("whsec_x",)),
                                       pool_min=1, pool_max=1)
    with TestClient(service.create_app(settings)) as client:
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
    assert len(checks) == 1  # the first checkout only: the others came right after a return
