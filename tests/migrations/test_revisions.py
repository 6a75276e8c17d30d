"""Every revision's downgrade restores the previous schema exactly; base leaves nothing."""

from __future__ import annotations

import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from psycopg.rows import dict_row

from billingdb import schema
from billingdb.migrate import alembic_config

SCRIPT = ScriptDirectory.from_config(alembic_config())
REVISIONS = [r for r in reversed(list(SCRIPT.walk_revisions()))]


def _snapshot(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as c:
        return schema.snapshot(c)


@pytest.mark.parametrize("rev", REVISIONS, ids=[r.revision for r in REVISIONS])
def test_downgrade_restores_previous_schema_exactly(empty_database_url: str, rev) -> None:  # type: ignore[no-untyped-def]
    cfg = alembic_config(url=empty_database_url)
    previous = rev.down_revision or "base"
    if previous != "base":
        command.upgrade(cfg, previous)
    before = _snapshot(empty_database_url)
    command.upgrade(cfg, rev.revision)
    after_upgrade = _snapshot(empty_database_url)
    assert after_upgrade != before, f"revision {rev.revision} changed nothing"
    command.downgrade(cfg, previous)
    assert _snapshot(empty_database_url) == before


def test_downgrade_base_leaves_no_billingdb_object(empty_database_url: str) -> None:
    cfg = alembic_config(url=empty_database_url)
    assert _snapshot(empty_database_url) == []
    command.upgrade(cfg, "head")
    assert len(_snapshot(empty_database_url)) > 10
    command.downgrade(cfg, "base")
    assert _snapshot(empty_database_url) == []
    with psycopg.connect(empty_database_url, autocommit=True) as c:
        grants = c.execute(
            """SELECT count(*) FROM information_schema.role_table_grants
               WHERE table_schema = 'public' AND grantee IN ('anon', 'authenticated', 'service_role')"""
        ).fetchone()
        routines = c.execute(
            """SELECT count(*) FROM information_schema.routine_privileges
               WHERE routine_schema = 'public' AND grantee IN ('anon', 'authenticated', 'service_role')"""
        ).fetchone()
    assert grants == (0,) and routines == (0,)
