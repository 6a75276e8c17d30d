"""`billingdb health`: the seed's monitoring queries against its success metrics (billing_health()).

One test per threshold builds the data that breaches it and checks the exit
code (1) and that the breach is named; a fresh database is healthy (0); an
unreachable one is exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
from ops_helpers import event, grant, negative_ledger, wrong_balance
from psycopg.rows import dict_row
from typer.testing import CliRunner

from billingdb.cli import app

runner = CliRunner()


def _health(database_url: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["health", *args, "--database-url", database_url])


def _report(database_url: str) -> dict[str, Any]:
    result = _health(database_url, "--json")
    return json.loads(result.stdout)


def _check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


def _breach_line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.split()[:2] == ["BREACH", name])


def test_fresh_database_is_healthy(database_url: str) -> None:
    result = _health(database_url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "healthy"
    report = _report(database_url)
    assert report["healthy"] is True and report["breaches"] == []
    assert [c["name"] for c in report["checks"]] == [
        "webhook_success_rate", "credit_balance_integrity", "negative_balances", "clawback_shortfalls",
        "cache_staleness", "cache_hit_rate", "cache_cleanup", "stripe_event_sync",
    ]
    assert {c["name"]: c["status"] for c in report["checks"]} == {
        "webhook_success_rate": "no_data", "credit_balance_integrity": "ok", "negative_balances": "ok",
        "clawback_shortfalls": "ok", "cache_staleness": "no_data", "cache_hit_rate": "no_data",
        "cache_cleanup": "no_data", "stripe_event_sync": "no_data",
    }


def test_webhook_success_rate_at_or_below_99_percent_is_a_breach(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    for i in range(199):
        event(conn, f"evt_ok_{i}", "processed")
    event(conn, "evt_failed", "failed")
    event(conn, "evt_old_failure", "failed", age="2 days")  # outside the 24 h window
    assert _health(database_url).exit_code == 0  # 199 / 200 = 99.5 %
    event(conn, "evt_pending", "pending")
    event(conn, "evt_failed_2", "failed")  # 199 / 202 = 98.51 %
    result = _health(database_url)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "UNHEALTHY: 1 breached: webhook_success_rate"
    assert "199 of 202 events received in the last 24 h processed" in _breach_line(result.output, "webhook_success_rate")
    check = _check(_report(database_url), "webhook_success_rate")
    assert check["status"] == "breach" and check["value"] == 98.51 and check["threshold"] == 99
    report = _report(database_url)
    assert report["events"]["failed"] == 3 and report["events"]["pending"] == 1
    assert report["events"]["unprocessed_24h"] == 3


def test_balance_not_equal_to_sum_of_ledger_is_a_breach(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    grant(conn, "u_ok", 10)
    grant(conn, "u_drift", 10)
    with wrong_balance(conn, "u_drift", 5):
        result = _health(database_url)
        report = _report(database_url)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "UNHEALTHY: 1 breached: credit_balance_integrity"
    assert "1 of 2 users with balance <> sum(ledger)" in _breach_line(result.output, "credit_balance_integrity")
    assert "ledger: u_drift: balance_mismatch, balance_after_mismatch" in result.output
    assert _check(report, "credit_balance_integrity")["value"] == 50
    assert _health(database_url).exit_code == 0


def test_negative_balance_is_a_breach(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    grant(conn, "u_neg", 3)
    with negative_ledger(conn, "u_neg", 5):
        result = _health(database_url)
    assert result.exit_code == 1
    assert "negative_balances" in result.output.splitlines()[0]
    assert "1 users with a negative balance or ledger sum" in _breach_line(result.output, "negative_balances")
    assert "ledger: u_neg: balance_mismatch, negative_balance, balance_after_mismatch" in result.output


def test_cache_staleness_of_5_minutes_is_a_breach(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        "INSERT INTO public.subscription_cache (user_id, state, cached_at, expires_at)"
        " VALUES ('fresh', '{}', now() - interval '4 minutes 50 seconds', now() + interval '10 seconds')"
    )
    assert _health(database_url).exit_code == 0
    # A row valid for longer than the TTL (e.g. after raising cache_ttl_seconds) serves old state.
    conn.execute(
        "INSERT INTO public.subscription_cache (user_id, state, cached_at, expires_at)"
        " VALUES ('stale', '{}', now() - interval '6 minutes', now() + interval '4 minutes')"
    )
    result = _health(database_url)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "UNHEALTHY: 1 breached: cache_staleness"
    assert "oldest of 2 valid cache rows cached 360" in _breach_line(result.output, "cache_staleness")


def test_an_events_api_sync_that_has_not_succeeded_for_a_day_is_a_breach(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    sync = "SELECT public.begin_stripe_event_sync(), public.finish_stripe_event_sync(now() - %s::interval, '{}', %s)"
    conn.execute(sync, ("1 minute", None))
    assert _health(database_url).exit_code == 0
    assert "last run succeeded" in _check(_report(database_url), "stripe_event_sync")["detail"]
    # It keeps failing: fine while the last success is younger than the threshold.
    conn.execute(sync, ("1 minute", "Stripe refused the API key (401)"))
    check = _check(_report(database_url), "stripe_event_sync")
    assert check["status"] == "ok" and "last run failed: Stripe refused the API key (401)" in check["detail"]
    conn.execute("UPDATE billingdb.stripe_event_sync SET last_succeeded_at = now() - interval '25 hours'")
    result = _health(database_url)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "UNHEALTHY: 1 breached: stripe_event_sync"
    assert "last run failed: Stripe refused the API key (401)" in _breach_line(result.output, "stripe_event_sync")
    conn.execute("SELECT public.set_billing_setting('health_max_event_sync_age_seconds', '172800')")
    assert _health(database_url).exit_code == 0
    # Never succeeded at all.
    conn.execute("UPDATE billingdb.stripe_event_sync SET last_succeeded_at = null")
    assert _check(_report(database_url), "stripe_event_sync")["status"] == "breach"


def test_cache_hit_rate_at_or_below_80_percent_is_a_breach(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    def reads(hits: int, misses: int) -> None:
        conn.execute("SELECT setval('billingdb.subscription_cache_hits', %s), setval('billingdb.subscription_cache_misses', %s)",
                     (hits, misses))

    reads(10, 89)  # 99 reads: too few to judge
    assert _check(_report(database_url), "cache_hit_rate")["status"] == "no_data"
    reads(81, 19)
    assert _health(database_url).exit_code == 0
    reads(80, 20)
    result = _health(database_url)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "UNHEALTHY: 1 breached: cache_hit_rate"
    assert "80 hits, 20 misses since" in _breach_line(result.output, "cache_hit_rate")


def test_every_breach_is_named(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    event(conn, "evt_failed", "failed")
    conn.execute("SELECT setval('billingdb.subscription_cache_hits', 1), setval('billingdb.subscription_cache_misses', 199)")
    result = _health(database_url)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "UNHEALTHY: 2 breached: webhook_success_rate, cache_hit_rate"
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        report = c.execute("SELECT public.billing_health() AS r").fetchone()["r"]
    assert report["breaches"] == ["webhook_success_rate", "cache_hit_rate"]


def test_unreachable_database_is_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "billingdb", "health", "--database-url", "postgresql://nobody@127.0.0.1:1/nowhere"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot connect to the database")
