"""Cache cleanup runs: clear_expired_subscription_cache v2 records each run, the history reads them back,
get_subscription_cache_status v2 reports the last one; `billingdb cache cleanup | history`."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from billingdb.cli import app

runner = CliRunner()


def _cache_row(conn: psycopg.Connection[Any], user_id: str, *, cached_ago: str, expires_in: str) -> None:
    conn.execute(
        """INSERT INTO public.subscription_cache (user_id, state, cached_at, expires_at)
           VALUES (%s, '{}', now() - %s::interval, now() + %s::interval)""",
        (user_id, cached_ago, expires_in),
    )


def _history(conn: psycopg.Connection[Any], n: int = 10) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM public.get_cache_cleanup_history(%s)", (n,)).fetchall()


def test_cleanup_deletes_expired_rows_and_records_the_run(conn) -> None:  # type: ignore[no-untyped-def]
    _cache_row(conn, "expired_1", cached_ago="10 minutes", expires_in="-5 minutes")
    _cache_row(conn, "expired_2", cached_ago="6 minutes", expires_in="-1 minute")
    _cache_row(conn, "valid", cached_ago="1 minute", expires_in="4 minutes")
    assert _history(conn) == []

    deleted = conn.execute("SELECT public.clear_expired_subscription_cache() AS n").fetchone()["n"]

    assert deleted == 2
    left = conn.execute("SELECT user_id FROM public.subscription_cache").fetchall()
    assert left == [{"user_id": "valid"}]
    (run,) = _history(conn)
    assert run["rows_deleted"] == 2 and run["duration_ms"] >= 0
    assert list(run) == ["started_at", "rows_deleted", "duration_ms"]


def test_history_is_newest_first_limited_to_n_and_keeps_a_week(conn) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        conn.execute("SELECT public.clear_expired_subscription_cache()")
    conn.execute(
        "INSERT INTO billingdb.cache_cleanup_runs (started_at, rows_deleted, duration_ms)"
        " VALUES (now() - interval '8 days', 5, 1)"
    )
    assert len(_history(conn, 2)) == 2
    runs = _history(conn, 10)
    assert [r["started_at"] for r in runs] == sorted((r["started_at"] for r in runs), reverse=True)
    assert len(runs) == 4
    # The next run deletes history older than 7 days.
    conn.execute("SELECT public.clear_expired_subscription_cache()")
    assert len(_history(conn, 10)) == 4
    assert all(r["rows_deleted"] == 0 for r in _history(conn, 10))


@pytest.mark.parametrize("n", [0, -1, None])
def test_history_rejects_a_bad_count(conn, n) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT * FROM public.get_cache_cleanup_history(%s::integer)", (n,))
    assert info.value.sqlstate == "22023"


def test_status_reports_the_last_cleanup_and_staleness(conn) -> None:  # type: ignore[no-untyped-def]
    status = conn.execute("SELECT public.get_subscription_cache_status() AS s").fetchone()["s"]
    assert status["last_cleanup"] is None and status["cleanup_job"] is None
    assert status["max_valid_age_seconds"] is None
    _cache_row(conn, "old_valid", cached_ago="2 minutes", expires_in="3 minutes")
    _cache_row(conn, "expired", cached_ago="9 minutes", expires_in="-4 minutes")
    conn.execute("SELECT public.clear_expired_subscription_cache()")
    status = conn.execute("SELECT public.get_subscription_cache_status() AS s").fetchone()["s"]
    assert status["last_cleanup"]["rows_deleted"] == 1
    assert status["last_cleanup"]["seconds_ago"] >= 0
    assert 119 <= status["max_valid_age_seconds"] < 180
    # Without pg_cron in this database the job is not reported.
    assert status["cleanup_job"] is None


def test_cli_cache_cleanup_and_history(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO public.subscription_cache (user_id, state, cached_at, expires_at)"
            " VALUES ('gone', '{}', now() - interval '9 minutes', now() - interval '4 minutes')"
        )
    empty = runner.invoke(app, ["cache", "history", "--database-url", database_url])
    assert empty.exit_code == 0 and "no cache cleanup has run yet" in empty.output
    cleaned = runner.invoke(app, ["cache", "cleanup", "--database-url", database_url])
    assert cleaned.exit_code == 0, cleaned.output
    assert cleaned.output.startswith("deleted 1 expired cache rows in ")
    history = runner.invoke(app, ["cache", "history", "-n", "5", "--database-url", database_url])
    assert history.exit_code == 0
    lines = history.output.splitlines()
    assert lines[0].split() == ["started", "(UTC)", "deleted", "duration"]
    assert len(lines) == 2 and lines[1].split()[2] == "1"
    as_json = json.loads(runner.invoke(app, ["cache", "history", "--json", "--database-url", database_url]).output)
    assert [r["rows_deleted"] for r in as_json] == [1]
    status = runner.invoke(app, ["cache", "status", "--database-url", database_url])
    assert "deleted 1 rows; not scheduled in pg_cron" in status.output
