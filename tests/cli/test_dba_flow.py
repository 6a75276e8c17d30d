"""The DBA's commands never surprise: a downgrade shows its plan and refuses to drop data unless told,
every failure is one line and exit 2 with nothing changed, concurrent upgrades serialize, and the
README's commands work as written (`billingdb db downgrade -1`, `billingdb db url`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import call, customer, fund, subscribe
from psycopg.rows import dict_row

from billingdb import schema

ROOT = Path(__file__).resolve().parents[2]


def _run(program: str, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT):  # type: ignore[no-untyped-def]
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", program, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=180)


def _billingdb(*args: str, **kw: Any):  # type: ignore[no-untyped-def]
    return _run("billingdb", *args, **kw)


def _alembic(url: str, *args: str):  # type: ignore[no-untyped-def]
    return _run("alembic", *args, env={"DATABASE_URL": url})


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr


def _version(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as c:
        if c.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0] is None:
            return None
        row = c.execute("SELECT version_num FROM public.alembic_version").fetchone()
        return row[0] if row else None


def _with_ledger(url: str) -> None:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as c:
        customer(c, "u1")
        subscribe(c, "u1", "active")
        fund(c, "u1", 7)
        call(c, "use_credits_validated", "u1", 2)


def _upgraded(url: str) -> None:
    result = _billingdb("db", "upgrade", "--database-url", url)
    assert result.returncode == 0, result.stderr


def test_downgrade_minus_one_works_as_written(empty_database_url: str) -> None:
    """Finding 1: `billingdb db downgrade -1` was `No such option: -1` (exit 2)."""
    _upgraded(empty_database_url)
    result = _billingdb("db", "downgrade", "-1", "--database-url", empty_database_url, "--yes")
    assert result.returncode == 0, result.stderr
    assert "undo 0001" in result.stderr and _version(empty_database_url) is None
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as c:
        assert schema.snapshot(c) == []


def test_a_downgrade_that_would_drop_data_is_refused_with_its_plan(empty_database_url: str) -> None:
    """Finding 2: `downgrade base` on a live ledger exited 0 with no prompt."""
    _upgraded(empty_database_url)
    _with_ledger(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as c:
        before = schema.snapshot(c)
    refused = _billingdb("db", "downgrade", "base", "--database-url", empty_database_url, "--yes")
    assert refused.returncode == 2, refused.stderr
    _no_traceback(refused)
    # The plan, before anything: the revision undone and each table with its rows.
    assert "Downgrade plan for --database-url: 0001 -> base" in refused.stderr.splitlines()[0]
    assert "undo 0001" in refused.stderr
    assert any(line.split()[1:] == ["public.credit_transactions", "2", "rows"]
               for line in refused.stderr.splitlines() if line.startswith("  drop")), refused.stderr
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "BD072" in error[0] and "public.credit_transactions" in error[0]
    assert "nothing was changed" in error[0]
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as c:
        assert schema.snapshot(c) == before
    assert _version(empty_database_url) == "0001"

    # Told explicitly, it drops them.
    done = _billingdb("db", "downgrade", "base", "--database-url", empty_database_url, "--allow-data-loss", "--yes")
    assert done.returncode == 0, done.stderr
    assert _version(empty_database_url) is None


def test_a_downgrade_asks_before_dropping_tables(empty_database_url: str) -> None:
    _upgraded(empty_database_url)
    refused = _run("billingdb", "db", "downgrade", "base", "--database-url", empty_database_url)
    assert refused.returncode == 1 and "Continue?" in refused.stderr and "nothing was changed" in refused.stderr
    assert _version(empty_database_url) == "0001"


def test_alembic_downgrade_refuses_too_and_rolls_back_everything(empty_database_url: str) -> None:
    assert _alembic(empty_database_url, "upgrade", "head").returncode == 0
    _with_ledger(empty_database_url)
    refused = _alembic(empty_database_url, "downgrade", "base")
    assert refused.returncode == 2
    _no_traceback(refused)
    assert refused.stderr.strip().splitlines()[-1].startswith("error: downgrade refused")
    assert _version(empty_database_url) == "0001"
    allowed = _alembic(empty_database_url, "-x", "allow_data_loss=true", "downgrade", "base")
    assert allowed.returncode == 0, allowed.stderr
    assert _version(empty_database_url) is None


def test_the_offline_rollback_carries_the_guard(empty_database_url: str) -> None:
    script = _run("alembic", "downgrade", "head:base", "--sql",
                  env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/unreachable"}).stdout
    assert "billingdb.allow_data_loss" in script and "BD072" in script
    _upgraded(empty_database_url)
    _with_ledger(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as c:
        before = schema.snapshot(c)
        with pytest.raises(psycopg.Error) as info:
            c.execute(script.encode())
        assert info.value.sqlstate == "BD072"
        c.execute("ROLLBACK")
        assert schema.snapshot(c) == before
        # With the setting given before the script (as the hint says), it runs.
        c.execute("SET billingdb.allow_data_loss = on")
        c.execute(script.encode())
        assert schema.snapshot(c) == []


def test_two_concurrent_upgrades_serialize(empty_database_url: str) -> None:
    """Finding 5: two `alembic upgrade head` on one fresh database collided (DuplicateTable, tracebacks)."""
    for round_ in range(2):
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(_alembic(empty_database_url, "upgrade", "head")))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        assert _version(empty_database_url) == "0001"
        ran = [r for r in results if "Running upgrade  -> 0001" in r.stderr]
        assert len(ran) == 1, f"round {round_}: the second upgrade must find nothing left to do"
        assert _billingdb("db", "downgrade", "base", "--database-url", empty_database_url, "--yes").returncode == 0


def test_a_lock_timeout_is_one_line_and_changes_nothing(empty_database_url: str) -> None:
    _upgraded(empty_database_url)
    with psycopg.connect(empty_database_url) as holder:
        holder.execute("SELECT count(*) FROM public.stripe_events")  # ACCESS SHARE, held until rollback
        result = _billingdb("db", "downgrade", "base", "--database-url", empty_database_url, "--yes")
        holder.rollback()
    assert result.returncode == 2, result.stderr
    _no_traceback(result)
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "55P03" in error[0] and "nothing was changed" in error[0], result.stderr
    assert _version(empty_database_url) == "0001"


def test_insufficient_privilege_is_one_line(empty_database_url: str, conn) -> None:  # type: ignore[no-untyped-def]
    import uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"billingdb_weak_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'weak-password'")
    try:
        params = conninfo_to_dict(empty_database_url)
        params.update(user=name, password="weak-password")
        url = schema.database_url(make_conninfo(**{k: v for k, v in params.items() if v is not None}),
                                  str(params["dbname"]))
        for result in (_billingdb("db", "upgrade", "--database-url", url), _alembic(url, "upgrade", "head")):
            assert result.returncode == 2, result.stderr
            _no_traceback(result)
            error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(error) == 1 and "42501" in error[0], result.stderr
        assert _version(empty_database_url) is None
    finally:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def test_db_url_prints_the_url_psql_would_use(empty_database_url: str, tmp_path: Path) -> None:
    result = _billingdb("db", "url", "--database-url", empty_database_url)
    assert result.returncode == 0 and result.stdout.strip() == empty_database_url
    (tmp_path / "billingdb.toml").write_text('[environments]\nstaging = "STAGING_URL"\n')
    named = _billingdb("db", "url", "--env", "staging", cwd=tmp_path, env={"STAGING_URL": empty_database_url})
    assert named.stdout.strip() == empty_database_url
    with psycopg.connect(named.stdout.strip()) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
