"""internal invokers: the internal helpers run with their caller's rights and search_path

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Why: issue 4's throughput target (process_stripe_event >= 0.5x pgbench
tpcb-like at 4 clients). Every function was SECURITY DEFINER with
SET search_path = '', and each such call switches user and search path out
and back; one Stripe event made eight to ten of them. The internal helpers
(underscore functions other than triggers) are only called by SECURITY
DEFINER entry points and triggers, which already run as the owner with an
empty search path: they become SECURITY INVOKER without SET. Bodies,
results and errors are unchanged; called directly, a helper no longer lends
the owner's rights (service_role could write any ledger row through
_append_credit_transaction, past the entry points' checks).

Measured: interleaved 10 s rounds on one server gave +4 % events/s in one
comparison and -9 % in the next: the gain, if any, is inside these
machines' noise. The revision stands for the privilege change.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql("revisions/0010_internal_invokers/upgrade.sql")


def downgrade() -> None:
    apply_sql("revisions/0010_internal_invokers/downgrade.sql")
