"""`alembic upgrade head --sql` is complete: running its output gives the same schema as online."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
from alembic import command
from psycopg.rows import dict_row

from billingdb import schema
from billingdb.migrate import alembic_config

ROOT = Path(__file__).resolve().parents[2]


def _offline(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/unreachable"  # offline must not connect
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args, "--sql"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    return result.stdout


def test_offline_upgrade_sql_builds_the_same_schema(empty_database_url: str, database_url: str) -> None:
    script = _offline("upgrade", "head")
    assert "CREATE OR REPLACE FUNCTION public.get_or_create_stripe_customer" in script
    # No catalog probing before the DDL (the migration lock is the one pg_catalog call there).
    assert re.findall(r"pg_catalog\.pg_(?!advisory_xact_lock\()", script.split("CREATE")[0]) == []
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as c:
        c.execute(script)
        offline = schema.snapshot(c)
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        online = schema.snapshot(c)
    assert offline == online


def test_offline_downgrade_sql_removes_everything(empty_database_url: str) -> None:
    command.upgrade(alembic_config(url=empty_database_url), "head")
    script = _offline("downgrade", "head:base")
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as c:
        c.execute(script)
        assert schema.snapshot(c) == []


def test_every_revision_sets_its_timeouts_in_one_transaction() -> None:
    script = _offline("upgrade", "head")
    revisions = re.findall(r"^-- Running upgrade", script, flags=re.MULTILINE)
    assert len(revisions) >= 1
    assert script.count("SET LOCAL lock_timeout") == len(revisions)
    assert script.count("SET LOCAL statement_timeout") == len(revisions)
    # The whole script is one transaction, the migration lock taken first.
    assert script.count("BEGIN;") == 1 and script.count("COMMIT;") == 1
    assert script.index("pg_advisory_xact_lock(4747274411)") < script.index("-- Running upgrade")
