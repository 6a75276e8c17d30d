"""`billingdb state | credits | plans | cache` against a real database."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from billingdb.cli import app

runner = CliRunner()


def _run(database_url: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [*args, "--database-url", database_url])


def test_plans_set_and_list_the_seed_plans(database_url: str) -> None:
    for price, name, credits, cents in [
        ("price_individual", "Individual", "30", "999"),
        ("price_team", "Team", "200", "2999"),
        ("price_custom", "Custom", "500", "4999"),
    ]:
        result = _run(database_url, "plans", "set", price, "--name", name, "--credits", credits,
                      "--amount-cents", cents, "--currency", "usd", "--interval", "month")
        assert result.exit_code == 0, result.output
        assert f"created plan {price}" in result.output
    listed = _run(database_url, "plans", "list", "--json")
    plans = json.loads(listed.output)
    assert [(p["name"], p["credits_per_period"]) for p in plans] == [
        ("Individual", 30), ("Team", 200), ("Custom", 500)
    ]
    bad = _run(database_url, "plans", "set", "price_x", "--name", "X", "--credits", "0")
    assert bad.exit_code != 0


def test_grant_history_show_and_state(database_url: str) -> None:
    granted = _run(database_url, "credits", "grant", "u1", "5", "--reason", "welcome", "--key", "w1")
    assert granted.exit_code == 0 and "balance 5" in granted.output
    replay = _run(database_url, "credits", "grant", "u1", "5", "--reason", "welcome", "--key", "w1")
    assert "already granted" in replay.output
    refused = _run(database_url, "credits", "grant", "u1", "-50", "--reason", "too much")
    assert refused.exit_code == 1 and "insufficient_credits" in refused.output
    shown = _run(database_url, "credits", "show", "u1", "--json")
    assert json.loads(shown.output) == {"user_id": "u1", "balance": 5}
    history = _run(database_url, "credits", "history", "u1")
    assert "adjustment" in history.output and "welcome" in history.output
    state = json.loads(_run(database_url, "state", "u1", "--json").output)
    assert state["credits_balance"] == 5 and state["reason"] == "no_subscription"


def test_cache_status_and_clear(database_url: str) -> None:
    _run(database_url, "state", "u1")
    status = json.loads(_run(database_url, "cache", "status", "--json").output)
    assert status["total"] == 1 and status["misses"] == 1
    cleared = _run(database_url, "cache", "clear")
    assert "deleted 1 cache rows" in cleared.output
    assert json.loads(_run(database_url, "cache", "status", "--json").output)["total"] == 0


def test_amounts_beyond_an_integer_are_refused_with_their_range(database_url: str, conn) -> None:  # type: ignore[no-untyped-def]
    """Not a bare "function ... (bigint) does not exist" or "integer out of range" from the database."""
    from helpers import contents

    before = contents(conn)
    grant = _run(database_url, "credits", "grant", "u1", "3000000000", "--reason", "too much")
    plan = _run(database_url, "plans", "set", "price_big", "--name", "Big", "--credits", "3000000000")
    for result in (grant, plan):
        assert result.exit_code == 2 and "less than or equal to 2147483647" in result.output, result.output
    assert contents(conn) == before
    # A grant that would take a balance past an integer is the database's 22023, one line.
    assert _run(database_url, "credits", "grant", "u1", "2000000000", "--reason", "a lot").exit_code == 0
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    over = subprocess.run([sys.executable, "-m", "billingdb", "credits", "grant", "u1", "2000000000", "--reason",
                           "again", "--database-url", database_url], env=env, capture_output=True, text=True)
    assert over.returncode == 1 and "Traceback" not in over.stderr, over.stderr
    assert over.stderr.startswith("error: the balance would exceed 2147483647 credits") and "[22023]" in over.stderr
