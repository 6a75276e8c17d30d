"""The monthly maintenance: purge done Stripe events older than the retention, in short batches;
trim pg_cron's run log; `billingdb maintenance run | schedule | unschedule | status` without pg_cron."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner

from billingdb.cli import app
from billingdb.client import BillingClient, PurgeResult

runner = CliRunner()


def _event(conn: psycopg.Connection[Any], event_id: str, status: str, age: str) -> None:
    conn.execute(
        """INSERT INTO public.stripe_events (stripe_event_id, event_type, payload, processed, status, created_at)
           VALUES (%s, 'invoice.paid', '{}', %s, %s, now() - %s::interval)""",
        (event_id, status in ("processed", "ignored", "stale"), status, age),
    )


def _event_ids(conn: psycopg.Connection[Any]) -> set[str]:
    return {r["stripe_event_id"] for r in conn.execute("SELECT stripe_event_id FROM public.stripe_events")}


def _seed_events(conn: psycopg.Connection[Any]) -> tuple[set[str], set[str]]:
    """Five done events past 90 days (due), and events that must stay."""
    due = set()
    for i, status in enumerate(["processed", "processed", "ignored", "stale", "processed"]):
        _event(conn, f"evt_due_{i}", status, f"{91 + i} days")
        due.add(f"evt_due_{i}")
    kept = {"evt_failed_old", "evt_pending_old", "evt_unmarked_old", "evt_recent", "evt_just_young"}
    _event(conn, "evt_failed_old", "failed", "200 days")
    _event(conn, "evt_pending_old", "pending", "200 days")
    _event(conn, "evt_unmarked_old", "processed", "200 days")
    # The runbook's "mark as unprocessed to trigger retry": status stays, processed goes false.
    conn.execute("UPDATE public.stripe_events SET processed = false WHERE stripe_event_id = 'evt_unmarked_old'")
    _event(conn, "evt_recent", "processed", "1 day")
    _event(conn, "evt_just_young", "processed", "89 days 23 hours")
    return due, kept


def test_purge_deletes_only_done_events_older_than_the_cutoff_in_batches(conn) -> None:  # type: ignore[no-untyped-def]
    due, kept = _seed_events(conn)
    client = BillingClient(conn)
    assert client.purge_stripe_events(batch_size=2) == PurgeResult(deleted=5, batches=3)
    assert _event_ids(conn) == kept
    assert client.purge_stripe_events() == PurgeResult(deleted=0, batches=0)


def test_purge_batch_function_deletes_at_most_one_batch_oldest_first(conn) -> None:  # type: ignore[no-untyped-def]
    due, kept = _seed_events(conn)
    n = conn.execute("SELECT public.purge_stripe_events_batch(batch_size => 2) AS n").fetchone()["n"]
    assert n == 2
    # The two oldest (95 and 94 days) went first.
    assert _event_ids(conn) == kept | (due - {"evt_due_4", "evt_due_3"})
    # A longer retention leaves younger events.
    n = conn.execute("SELECT public.purge_stripe_events_batch('92 days 12 hours', 100) AS n").fetchone()["n"]
    assert n == 1 and "evt_due_1" in _event_ids(conn)


def test_retention_setting_is_the_default(conn) -> None:  # type: ignore[no-untyped-def]
    _seed_events(conn)
    client = BillingClient(conn)
    conn.execute("UPDATE billingdb.billing_settings SET value = '180' WHERE name = 'stripe_events_retention_days'")
    assert client.purge_stripe_events().deleted == 0
    conn.execute("UPDATE billingdb.billing_settings SET value = '30' WHERE name = 'stripe_events_retention_days'")
    assert client.purge_stripe_events().deleted == 5 + 1  # evt_just_young too


def test_purge_skips_rows_locked_by_another_transaction(conn, connect, database_url: str) -> None:  # type: ignore[no-untyped-def]
    due, kept = _seed_events(conn)
    holder = connect(autocommit=False)
    holder.execute("SELECT 1 FROM public.stripe_events WHERE stripe_event_id = 'evt_due_0' FOR UPDATE")
    done = threading.Event()
    result: list[PurgeResult] = []

    def purge() -> None:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
            c.execute("SET lock_timeout = '2s'")
            result.append(BillingClient(c).purge_stripe_events(batch_size=2))
        done.set()

    worker = threading.Thread(target=purge)
    worker.start()
    assert done.wait(10), "purge waited for a locked row"
    worker.join()
    holder.rollback()
    assert result == [PurgeResult(deleted=4, batches=2)]
    assert _event_ids(conn) == kept | {"evt_due_0"}


@pytest.mark.parametrize(
    "call",
    [
        "SELECT public.purge_stripe_events_batch('29 days')",
        "SELECT public.purge_stripe_events_batch(null, 0)",
        "SELECT public.purge_stripe_events_batch(null, 100001)",
        "SELECT public.purge_stripe_events_batch(null, null)",
        "SELECT public.trim_cron_job_run_details('-1 day')",
    ],
)
def test_bad_arguments_are_22023(conn, call: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.Error) as info:
        conn.execute(call)
    assert info.value.sqlstate == "22023"


def test_trim_cron_history_is_null_without_pg_cron(conn) -> None:  # type: ignore[no-untyped-def]
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
        pytest.skip("pg_cron is installed in this database")
    assert conn.execute("SELECT public.trim_cron_job_run_details() AS n").fetchone()["n"] is None


def test_cli_maintenance_run_does_every_job_once(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        _seed_events(c)
        c.execute(
            "INSERT INTO public.subscription_cache (user_id, state, cached_at, expires_at)"
            " VALUES ('gone', '{}', now() - interval '9 minutes', now() - interval '4 minutes')"
        )
    result = runner.invoke(app, ["maintenance", "run", "--batch-size", "2", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("cache cleanup: deleted 1 expired cache rows in ")
    assert lines[1] == ("stripe_events purge: deleted 5 processed events older than the retention "
                        "(stripe_events_retention_days) in 3 batches")
    assert lines[2] == "cron.job_run_details trim: skipped, pg_cron is not installed in this database"
    again = runner.invoke(app, ["maintenance", "run", "--retention-days", "30", "--json",
                                "--database-url", database_url])
    report = json.loads(again.output)
    assert report["stripe_events_deleted"] == 1 and report["cache_rows_deleted"] == 0
    assert report["cron_runs_deleted"] is None
    assert report["credit_holds_released"] == 0
    too_short = runner.invoke(app, ["maintenance", "run", "--retention-days", "7", "--database-url", database_url])
    assert too_short.exit_code == 2  # usage error: at least 30 days


def test_cli_schedule_without_pg_cron_is_a_clear_error(database_url: str) -> None:
    for verb in ("schedule", "unschedule"):
        result = runner.invoke(app, ["maintenance", verb, "--database-url", database_url])
        assert result.exit_code == 1
        assert "pg_cron is not installed in this database" in result.output and "[BD050]" in result.output
    assert "billingdb maintenance run" in runner.invoke(
        app, ["maintenance", "schedule", "--database-url", database_url]).output
    status = runner.invoke(app, ["maintenance", "status", "--database-url", database_url])
    assert status.exit_code == 0
    assert [line.split()[0] for line in status.output.splitlines()[::2]] == [
        "subscription_cache_cleanup", "stripe_events_purge", "cron_job_run_details_trim", "credit_holds_release"
    ]
    assert status.output.count("not scheduled") == 4
