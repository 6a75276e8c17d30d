"""Revision 0005's downgrade refuses (BD072) once the append-only ledger holds hold or release entries."""

from __future__ import annotations

import psycopg
import pytest
from alembic import command
from helpers import call, customer, fund, subscribe

from billingdb.migrate import alembic_config



def test_downgrade_refused_after_holds_were_used(empty_database_url: str) -> None:
    cfg = alembic_config(url=empty_database_url)
    command.upgrade(cfg, "head")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        customer(conn, "u1")
        subscribe(conn, "u1", "active")
        fund(conn, "u1", 5)
        held = call(conn, "reserve_credits", "u1", 2)
        call(conn, "release_credit_hold", held["hold_id"])
    with pytest.raises(psycopg.Error) as info:
        command.downgrade(cfg, "0004")
    assert getattr(info.value, "sqlstate", None) == "BD072" or "BD072" in str(info.value)
    # Nothing was undone: the holds and the ledger are as they were.
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM public.credit_holds").fetchone() == (1,)
        assert conn.execute("SELECT version_num FROM public.alembic_version").fetchone() == ("0005",)


def test_downgrade_without_holds_is_clean(empty_database_url: str) -> None:
    cfg = alembic_config(url=empty_database_url)
    command.upgrade(cfg, "head")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        customer(conn, "u1")
        subscribe(conn, "u1", "active")
        fund(conn, "u1", 5)
        call(conn, "use_credits_validated", "u1", 1)
    command.downgrade(cfg, "0004")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.credit_holds')").fetchone() == (None,)
        assert conn.execute("SELECT sum(amount) FROM public.credit_transactions").fetchone() == (4,)
