"""Test suite configuration: billingdb's pytest plugin provides the database fixtures.

After every test that used a database at head (the ``database_url`` fixture,
also behind ``conn`` and ``connect``), the ledger invariant is checked: every
user's balance equals the sum of their credit transactions, no balance is
negative, and each entry's balance_after is the running sum of that user's
entries. Tests that downgrade may have removed the tables; then there is nothing
to check.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

pytest_plugins = ["billingdb.testing"]

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
FROM public.credit_balances AS b
FULL JOIN sums AS s ON s.user_id = b.user_id
WHERE coalesce(b.balance, 0) <> coalesce(s.total, 0)
UNION ALL
SELECT 'negative balance', b.user_id, b.balance::text, NULL
FROM public.credit_balances AS b
WHERE b.balance < 0
UNION ALL
SELECT 'balance_after <> running sum', r.user_id, r.balance_after::text, r.id::text
FROM running AS r
WHERE r.balance_after <> r.running_total
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
            "SELECT to_regclass('public.credit_balances') IS NOT NULL"
            " AND to_regclass('public.credit_transactions') IS NOT NULL"
        ).fetchone()
        if not (present and present[0]):
            return
        violations = c.execute(_LEDGER_VIOLATIONS).fetchall()
    assert violations == [], f"ledger invariant violated: {violations}"
