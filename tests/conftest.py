"""Test suite configuration: billingdb's pytest plugin provides the database fixtures.

After every test that used a database at head (the ``database_url`` fixture,
also behind ``conn`` and ``connect``), the ledger invariant is checked: every
user's balance equals the sum of their credit transactions, no balance is
negative, and each entry's balance_after is the running sum of that user's
entries. Tests that downgrade may have removed the tables; then there is nothing
to check.

Credit holds leave that rule as it is: held credits are out of
the balance through a 'hold' ledger entry. Their own invariant is checked too:
each hold has its one 'hold' entry of -amount; a settled hold its 'release'
entry of +amount; a committed hold its 'usage' entry of -amount (all of the
hold's user); and per user, the amount still held equals -(sum of the user's
hold and release entries), so no such entry exists outside a hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# pytest-alembic's own alembic_config and alembic_engine (an in-memory SQLite) come from a plugin, as
# billingdb's do; fixtures named in a conftest beat both, so its built-in tests run on PostgreSQL, from
# an empty database, with billingdb's Alembic configuration.
from billingdb.testing.plugin import alembic_config, alembic_engine  # noqa: F401

# The database fixtures come from billingdb's pytest plugin (billingdb.testing.plugin, an entry point).

_LEDGER_VIOLATIONS = """
WITH sums AS (
    SELECT t.user_id, sum(t.amount) AS total
    FROM public.credit_transactions AS t
    GROUP BY t.user_id
),
running AS (
    SELECT
        t.id,
        t.user_id,
        t.balance_after,
        sum(t.amount) OVER (PARTITION BY t.user_id ORDER BY t.id) AS running_total
    FROM public.credit_transactions AS t
)
SELECT 'balance <> sum(amount)' AS problem, coalesce(b.user_id, s.user_id) AS user_id,
       b.balance::text AS balance, s.total::text AS detail
FROM billingdb.credit_balances AS b
FULL JOIN sums AS s ON s.user_id = b.user_id
WHERE coalesce(b.balance, 0) <> coalesce(s.total, 0)
UNION ALL
SELECT 'negative balance', b.user_id, b.balance::text, NULL
FROM billingdb.credit_balances AS b
WHERE b.balance < 0
UNION ALL
SELECT 'balance_after <> running sum', r.user_id, r.balance_after::text, r.id::text
FROM running AS r
WHERE r.balance_after <> r.running_total
"""


_HOLD_VIOLATIONS = """
SELECT 'hold entry' AS problem, h.user_id, h.hold_id::text AS hold, h.status AS detail
FROM billingdb.credit_holds AS h
LEFT JOIN public.credit_transactions AS t ON t.id = h.hold_transaction_id
WHERE t.id IS NULL OR t.transaction_type <> 'hold' OR t.amount <> -h.amount OR t.user_id <> h.user_id
UNION ALL
SELECT 'release entry', h.user_id, h.hold_id::text, h.status
FROM billingdb.credit_holds AS h
LEFT JOIN public.credit_transactions AS t ON t.id = h.release_transaction_id
WHERE h.status <> 'held'
    AND (t.id IS NULL OR t.transaction_type <> 'release' OR t.amount <> h.amount OR t.user_id <> h.user_id)
UNION ALL
SELECT 'usage entry', h.user_id, h.hold_id::text, h.status
FROM billingdb.credit_holds AS h
LEFT JOIN public.credit_transactions AS t ON t.id = h.usage_transaction_id
WHERE h.status = 'committed'
    AND (t.id IS NULL OR t.transaction_type <> 'usage' OR t.amount <> -h.amount OR t.user_id <> h.user_id)
UNION ALL
SELECT 'held <> -(hold + release entries)', coalesce(e.user_id, k.user_id), k.held::text, e.total::text
FROM (
    SELECT t.user_id, sum(t.amount) AS total
    FROM public.credit_transactions AS t
    WHERE t.transaction_type IN ('hold', 'release')
    GROUP BY t.user_id
) AS e
FULL JOIN (
    SELECT h.user_id, sum(h.amount) FILTER (WHERE h.status = 'held') AS held
    FROM billingdb.credit_holds AS h
    GROUP BY h.user_id
) AS k ON k.user_id = e.user_id
WHERE coalesce(e.total, 0) <> -coalesce(k.held, 0)
"""


@pytest.fixture(autouse=True)
def ledger_invariant(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test at head: balance = sum(amount) for every user, nothing negative."""
    if "database_url" not in request.fixturenames:
        yield
        return
    # Requested here so that it is torn down (dropped) after this check.
    url: str = request.getfixturevalue("database_url")
    yield
    with psycopg.connect(url, autocommit=True) as c:
        present = c.execute(
            "SELECT to_regclass('billingdb.credit_balances') IS NOT NULL"
            " AND to_regclass('public.credit_transactions') IS NOT NULL"
        ).fetchone()
        if not (present and present[0]):
            return
        violations = c.execute(_LEDGER_VIOLATIONS).fetchall()
        holds = c.execute("SELECT to_regclass('billingdb.credit_holds') IS NOT NULL").fetchone()
        hold_violations = c.execute(_HOLD_VIOLATIONS).fetchall() if holds and holds[0] else []
    assert violations == [], f"ledger invariant violated: {violations}"
    assert hold_violations == [], f"credit hold invariant violated: {hold_violations}"


@pytest.fixture
def service_login_url(conn: psycopg.Connection, database_url: str) -> Iterator[str]:  # type: ignore[type-arg]
    """A LOGIN role that is a member of service_role, as a URL to this test's database (roles are
    cluster-wide: it is dropped afterwards)."""
    name = f"billingdb_service_{uuid.uuid4().hex[:8]}"
    password = "service-login-test-password"
    conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE service_role")
    params = conninfo_to_dict(database_url)
    params.update(user=name, password=password)
    try:
        yield make_conninfo(**{k: v for k, v in params.items() if v is not None})
    finally:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")
