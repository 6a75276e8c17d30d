"""Every billingdb function passes plpgsql_check (CI profile: PostgreSQL 15 with the extension)."""

from __future__ import annotations

from billingdb.testing.plugin import require_extension


def test_every_function_passes_plpgsql_check(conn) -> None:  # type: ignore[no-untyped-def]
    require_extension(conn, "plpgsql_check")
    functions = conn.execute(
        """SELECT p.oid, p.oid::regprocedure::text AS signature
           FROM pg_catalog.pg_proc AS p
           JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
           JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
           WHERE n.nspname = 'public' AND l.lanname = 'plpgsql' AND p.prorettype <> 'trigger'::regtype"""
    ).fetchall()
    assert functions, "no PL/pgSQL function found"
    problems = []
    for f in functions:
        rows = conn.execute(
            "SELECT level, message, lineno FROM public.plpgsql_check_function_tb(%s::regprocedure)",
            (f["signature"],),
        ).fetchall()
        problems += [f"{f['signature']} line {r['lineno']}: {r['level']}: {r['message']}"
                     for r in rows if r["level"] == "error"]
    assert problems == []
