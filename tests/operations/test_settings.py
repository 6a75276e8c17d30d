"""set_billing_setting: the one writer of the tunables (service_role may not write the table)."""

from __future__ import annotations

import psycopg
import pytest
from helpers import call, contents


def _value(conn, name: str) -> str:  # type: ignore[no-untyped-def]
    return conn.execute("SELECT value FROM billingdb.billing_settings WHERE name = %s", (name,)).fetchone()["value"]


def test_sets_a_tunable_and_logs_it(conn) -> None:  # type: ignore[no-untyped-def]
    with conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        result = call(conn, "set_billing_setting", "cache_ttl_seconds", "60")
    assert result == {"name": "cache_ttl_seconds", "value": "60", "previous": "300"}
    assert _value(conn, "cache_ttl_seconds") == "60"
    log = conn.execute(
        "SELECT details FROM billingdb.activity_log WHERE activity_type = 'setting_changed'"
    ).fetchone()["details"]
    assert log["name"] == "cache_ttl_seconds" and log["previous"] == "300"
    # The state cache uses the new TTL at once.
    state = call(conn, "get_user_subscription_state", "u1")
    state = call(conn, "get_user_subscription_state", "u1")
    assert state["cached"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("no_such_setting", "1"),
        ("cache_stats_reset_at", "2026-01-01"),
        (None, "1"),
        ("cache_ttl_seconds", "-1"),
        ("cache_ttl_seconds", "5 minutes"),
        ("cache_ttl_seconds", None),
        ("past_due_can_spend", "yes"),
        ("stripe_events_retention_days", "7"),
        ("health_min_cache_hit_pct", "x" * 1000),
    ],
)
def test_bad_names_and_values_are_22023_and_change_nothing(conn, name, value) -> None:  # type: ignore[no-untyped-def]
    before = contents(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        call(conn, "set_billing_setting", name, value)
    assert info.value.sqlstate == "22023"
    assert info.value.diag.message_hint
    assert contents(conn) == before


def test_the_cli_lists_and_sets_settings(database_url: str, conn) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    def run(*args: str):  # type: ignore[no-untyped-def]
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        return subprocess.run([sys.executable, "-m", "billingdb", "settings", *args, "--database-url", database_url],
                              env=env, capture_output=True, text=True)

    listed = run("list")
    assert listed.returncode == 0 and "cache_ttl_seconds" in listed.stdout and "300" in listed.stdout
    changed = run("set", "cache_ttl_seconds", "90")
    assert changed.returncode == 0 and changed.stdout.strip() == "cache_ttl_seconds: 300 -> 90"
    assert _value(conn, "cache_ttl_seconds") == "90"
    before = contents(conn)
    refused = run("set", "cache_ttl_seconds", "-5")
    assert refused.returncode == 1 and "[22023]" in refused.stderr and "hint: Seconds" in refused.stderr
    assert "Traceback" not in refused.stderr and contents(conn) == before
