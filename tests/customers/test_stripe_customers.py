"""get_or_create_stripe_customer and link_stripe_customer (revision 0001)."""

from __future__ import annotations

import threading

import psycopg
import pytest


def _rows(conn):  # type: ignore[no-untyped-def]
    return conn.execute("SELECT * FROM billingdb.stripe_customers ORDER BY user_id").fetchall()


def test_seed_runbook_call_creates_one_row_and_asks_for_a_customer(conn) -> None:  # type: ignore[no-untyped-def]
    result = conn.execute(
        "SELECT public.get_or_create_stripe_customer('test_user_id', 'test@example.com') AS r"
    ).fetchone()["r"]
    assert result["user_id"] == "test_user_id"
    assert result["stripe_customer_id"] is None
    assert result["needs_stripe_customer"] is True
    assert result["created"] is True
    assert result["customer_params"] == {
        "email": "test@example.com",
        "metadata": {"user_id": "test_user_id"},
        "idempotency_key": "billingdb-customer-test_user_id",
    }
    assert len(_rows(conn)) == 1


def test_second_call_returns_the_same_row_and_keeps_email_unless_given(conn) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SELECT public.get_or_create_stripe_customer('u1', 'a@example.com')")
    again = conn.execute("SELECT public.get_or_create_stripe_customer('u1', NULL) AS r").fetchone()["r"]
    assert again["created"] is False and again["email"] == "a@example.com"
    changed = conn.execute("SELECT public.get_or_create_stripe_customer('u1', 'b@example.com') AS r").fetchone()["r"]
    assert changed["email"] == "b@example.com"
    assert len(_rows(conn)) == 1


def test_linked_customer_is_returned(conn) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SELECT public.get_or_create_stripe_customer('u1', 'a@example.com')")
    linked = conn.execute("SELECT public.link_stripe_customer('u1', 'cus_123') AS r").fetchone()["r"]
    assert linked == {"user_id": "u1", "stripe_customer_id": "cus_123"}
    state = conn.execute("SELECT public.get_or_create_stripe_customer('u1', NULL) AS r").fetchone()["r"]
    assert state["stripe_customer_id"] == "cus_123"
    assert state["needs_stripe_customer"] is False
    assert state["customer_params"] is None
    # Linking the same pair again is a no-op.
    conn.execute("SELECT public.link_stripe_customer('u1', 'cus_123')")
    assert len(_rows(conn)) == 1


def test_concurrent_callers_get_one_row(connect) -> None:  # type: ignore[no-untyped-def]
    conns = [connect(autocommit=False) for _ in range(8)]
    barrier = threading.Barrier(len(conns), timeout=30)
    results: list[dict] = []
    errors: list[BaseException] = []

    def call(c) -> None:  # type: ignore[no-untyped-def]
        try:
            barrier.wait()
            r = c.execute("SELECT public.get_or_create_stripe_customer('racer', 'r@example.com') AS r").fetchone()
            c.commit()
            results.append(r["r"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(results) == 8
    assert sum(r["created"] for r in results) == 1
    check = connect()
    assert check.execute("SELECT count(*) AS n FROM billingdb.stripe_customers").fetchone()["n"] == 1


@pytest.mark.parametrize(
    ("call", "sqlstate"),
    [
        ("SELECT public.get_or_create_stripe_customer(NULL, 'a@example.com')", "22023"),
        ("SELECT public.get_or_create_stripe_customer('  ', 'a@example.com')", "22023"),
        ("SELECT public.get_or_create_stripe_customer('u1', 'not-an-email')", "22023"),
        ("SELECT public.link_stripe_customer(NULL, 'cus_1')", "22023"),
        ("SELECT public.link_stripe_customer('u1', 'acct_1')", "22023"),
        ("SELECT public.link_stripe_customer('u1', NULL)", "22023"),
        ("SELECT public.link_stripe_customer('u2', 'cus_taken')", "BD004"),
        ("SELECT public.link_stripe_customer('owner', 'cus_other')", "BD004"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(conn, call: str, sqlstate: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SELECT public.link_stripe_customer('owner', 'cus_taken')")
    before = _rows(conn)
    with pytest.raises(psycopg.Error) as info:
        conn.execute(call)
    assert info.value.sqlstate == sqlstate
    assert _rows(conn) == before


def test_client_roles_cannot_execute(conn) -> None:  # type: ignore[no-untyped-def]
    for role in ("anon", "authenticated"):
        row = conn.execute(
            "SELECT has_function_privilege(%s, 'public.get_or_create_stripe_customer(text,text)', 'EXECUTE') AS ok",
            (role,),
        ).fetchone()
        assert row["ok"] is False
    row = conn.execute(
        "SELECT has_function_privilege('service_role', 'public.get_or_create_stripe_customer(text,text)', 'EXECUTE') AS ok"
    ).fetchone()
    assert row["ok"] is True


def test_two_users_linking_one_customer_at_once_get_bd004_not_a_unique_violation(connect) -> None:  # type: ignore[no-untyped-def]
    """Found by review: the second link waited on the unique key and then failed with a bare 23505; the
    customer's lock makes it wait for the first link and see its owner: BD004, nothing written."""
    first, second = connect(autocommit=False), connect()
    first.execute("SELECT public.link_stripe_customer('u_first', 'cus_RACE')")
    outcome: dict[str, object] = {}

    def link_second() -> None:
        try:
            second.execute("SELECT public.link_stripe_customer('u_second', 'cus_RACE')")
            outcome["result"] = "linked"
        except psycopg.Error as exc:
            outcome["result"] = exc

    thread = threading.Thread(target=link_second)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), "the second link should wait for the first one's transaction"
    first.commit()
    thread.join(30)
    error = outcome["result"]
    assert isinstance(error, psycopg.Error) and error.sqlstate == "BD004", error
    assert "customer already linked" in str(error) and "u_first" in str(error)
    rows = second.execute("SELECT user_id, stripe_customer_id FROM billingdb.stripe_customers ORDER BY user_id"
                          ).fetchall()
    assert rows == [{"user_id": "u_first", "stripe_customer_id": "cus_RACE"}]
