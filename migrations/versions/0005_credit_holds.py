"""credit holds: reserve_credits, commit_credit_hold, release_credit_hold, the expiry sweep

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

Why: issue 6, the seed's credit-gated operation (/stories/generate-with-credits)
without deduct-then-refund: a process that dies between taking credits and
finishing the work must never lose them. reserve_credits() moves credits out of
the spendable balance into a hold (a 'hold' ledger entry and a credit_holds
row with an expiry); commit_credit_hold() spends them (a 'release' and a
'usage' entry), release_credit_hold() gives them back (a 'release' entry), and
release_expired_credit_holds() gives back every hold nobody settled in time.
The ledger's invariant (balance = sum(amount), balance_after the running sum)
is unchanged: held credits are simply not in the balance. The sweep joins
0004's pg_cron jobs (billing_cron_jobs v2 lists it; it is scheduled here when
pg_cron is installed) and `billingdb maintenance run`.

The downgrade refuses (BD072) once the ledger holds hold or release entries:
the ledger is append-only and 0004's ledger cannot represent them.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Internal helpers first (callers' bodies name them), then the public API.
FUNCTIONS = [
    "_credit_hold_json",
    "_release_credit_hold",
    "reserve_credits",
    "commit_credit_hold",
    "release_credit_hold",
    "release_expired_credit_holds",
]


def upgrade() -> None:
    apply_sql(
        "revisions/0005_credit_holds/upgrade.sql",
        *(f"functions/{name}/v1.sql" for name in FUNCTIONS),
        "functions/billing_cron_jobs/v2.sql",
        "revisions/0005_credit_holds/schedule_jobs.sql",
    )


def downgrade() -> None:
    apply_sql(
        "revisions/0005_credit_holds/downgrade.sql",
        "functions/billing_cron_jobs/v1.sql",
    )
