"""The privilege model, read from the catalog: who may call what, and what runs with whose rights.

public holds the interface only: the seed's three tables (stripe_events, subscription_cache,
credit_transactions) and the entry-point functions. Everything else (billingdb's other tables,
every internal helper, trigger function and row rule) is in the private schema billingdb, which no
API role may use. Every SECURITY DEFINER function pins `search_path = pg_catalog, pg_temp`.
service_role may execute the entry points and read the three public tables, and nothing else;
anon, authenticated and a fresh LOGIN role may do nothing at all.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from helpers import contents, customer, fund, subscribe

#: The seed's tables: the only tables in public, readable (never writable) by service_role.
INTERFACE_TABLES = {"public.stripe_events", "public.subscription_cache", "public.credit_transactions"}

API_ROLES = ("anon", "authenticated", "service_role")


def _functions(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(
        """
        SELECT p.oid, n.nspname AS schema, p.proname AS name, p.oid::regprocedure::text AS signature,
               p.prosecdef AS definer, p.proconfig AS config, p.prorettype = 'trigger'::regtype AS is_trigger
        FROM pg_proc AS p
        JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('public', 'billingdb')
          AND NOT EXISTS (SELECT FROM pg_depend AS d WHERE d.objid = p.oid AND d.deptype = 'e')
        ORDER BY 4
        """
    ).fetchall()


def _tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        """
        SELECT format('%I.%I', n.nspname, c.relname) AS name
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'billingdb') AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND c.relname <> 'alembic_version'
          -- a sequence that belongs to an identity column goes with its table
          AND NOT EXISTS (SELECT FROM pg_depend AS d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
        ORDER BY 1
        """
    ).fetchall()
    return [r["name"] for r in rows]


def test_public_holds_only_the_interface(conn) -> None:  # type: ignore[no-untyped-def]
    tables = _tables(conn)
    assert {t for t in tables if t.startswith("public.")} == INTERFACE_TABLES
    assert len([t for t in tables if t.startswith("billingdb.")]) >= 9
    for f in _functions(conn):
        if f["schema"] == "public":
            # Entry points: public names, definer rights, callable by service_role.
            assert not f["name"].startswith("_") and not f["is_trigger"], f["signature"]
            assert f["definer"], f["signature"]
        else:
            assert f["name"].startswith("_"), f["signature"]


def test_every_definer_pins_pg_catalog_then_pg_temp(conn) -> None:  # type: ignore[no-untyped-def]
    """(a) A SECURITY DEFINER function names pg_temp, and last: an empty path searches pg_temp first."""
    definers = [f for f in _functions(conn) if f["definer"]]
    assert len(definers) >= 25
    for f in definers:
        settings = [c for c in (f["config"] or []) if c.startswith("search_path=")]
        assert settings == ["search_path=pg_catalog, pg_temp"], (f["signature"], f["config"])


def test_no_function_in_public_has_a_mutable_search_path(conn) -> None:  # type: ignore[no-untyped-def]
    """The lint Supabase runs (splinter's function_search_path_mutable), for the schema it exposes."""
    mutable = [
        f["signature"] for f in _functions(conn)
        if f["schema"] == "public" and not any(c.startswith("search_path=") for c in (f["config"] or []))
    ]
    assert mutable == []


def test_no_definer_is_executable_by_the_client_roles(conn) -> None:  # type: ignore[no-untyped-def]
    """The lint's second half: a SECURITY DEFINER function callable by anon or authenticated (on Supabase,
    an RPC endpoint any signed-in or anonymous browser may call with the owner's rights)."""
    exposed = conn.execute(
        """
        SELECT p.oid::regprocedure::text AS f, r.rolname AS role
        FROM pg_proc AS p CROSS JOIN pg_roles AS r
        WHERE p.prosecdef AND r.rolname IN ('anon', 'authenticated')
          AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
          AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
          AND NOT EXISTS (SELECT FROM pg_depend AS d WHERE d.objid = p.oid AND d.deptype = 'e')
        """
    ).fetchall()
    assert exposed == []


@pytest.fixture
def login_role(conn, pg_server_url: str):  # type: ignore[no-untyped-def]
    """A fresh LOGIN role with no membership, dropped afterwards (roles are cluster-wide)."""
    import uuid

    name = f"billingdb_fresh_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        yield name
    finally:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def test_privilege_matrix(conn, login_role: str) -> None:  # type: ignore[no-untyped-def]
    """(d) Every function and table, for anon, authenticated, service_role and a fresh LOGIN role."""
    roles = [*API_ROLES, login_role]
    functions = _functions(conn)
    tables = _tables(conn)
    assert len(functions) >= 50 and len(tables) >= 12
    for role in roles:
        for f in functions:
            may = conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE') AS ok", (role, f["oid"])).fetchone()
            expected = role == "service_role" and f["schema"] == "public"
            assert may["ok"] is expected, (role, f["signature"])
        for t in tables:
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                if t.startswith("billingdb.subscription_cache_"):  # sequences
                    if privilege not in ("SELECT", "UPDATE"):
                        continue
                    ok = conn.execute("SELECT has_sequence_privilege(%s, %s, %s) AS ok", (role, t, privilege))
                else:
                    ok = conn.execute("SELECT has_table_privilege(%s, %s, %s) AS ok", (role, t, privilege))
                expected = role == "service_role" and t in INTERFACE_TABLES and privilege == "SELECT"
                assert ok.fetchone()["ok"] is expected, (role, t, privilege)
        usage = conn.execute("SELECT has_schema_privilege(%s, 'billingdb', 'USAGE') AS ok", (role,)).fetchone()
        assert usage["ok"] is False, role


def test_service_role_can_neither_write_a_table_nor_call_a_helper(conn) -> None:  # type: ignore[no-untyped-def]
    """(c) Tried, not only read from the catalog: every write and every helper call is refused."""
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 5)
    before = contents(conn)
    attempts = [f"DELETE FROM {t}" for t in _tables(conn) if not t.startswith("billingdb.subscription_cache_")]
    attempts += [f"UPDATE {t} SET user_id = 'u2'" for t in ("public.credit_transactions", "public.subscription_cache")]
    attempts += [
        "INSERT INTO public.subscription_cache (user_id, plan_name, credits_balance, expires_at) "
        "VALUES ('u9', 'Custom', 1000000, now() + interval '1 day')",
        "SELECT billingdb._append_credit_transaction('u1', 1000, 'adjustment', 'free', '{}', 'k', null, null)",
        "SELECT billingdb._dispatch_stripe_event('{}'::jsonb, '{}'::jsonb)",
        "SELECT billingdb._billing_setting('cache_ttl_seconds')",
    ]
    for statement in attempts:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SET LOCAL ROLE service_role")
            conn.execute(statement)
    assert contents(conn) == before
    # What it may do: call an entry point, read the interface.
    with conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        assert conn.execute("SELECT public.grant_credits('u1', 2, 'goodwill') ->> 'balance' AS b").fetchone()["b"] == "7"
        assert conn.execute("SELECT count(*) AS n FROM public.credit_transactions").fetchone()["n"] == 2
