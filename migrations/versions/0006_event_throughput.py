"""event throughput: a new Stripe event is applied, then recorded once

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Why: issue 4's throughput target (process_stripe_event >= 0.5x pgbench
tpcb-like at 4 clients). process_stripe_event v1 wrote every new event twice
(INSERT as received, row lock, UPDATE with the outcome: two heap tuples, and
the UPDATE touches indexed columns, so every index got a second entry) and
compressed the payload. v2 takes the event's advisory lock (_lock_stripe_event,
after the customer's), applies a new event with _dispatch_stripe_event (v2
holds the sub-transaction that _attempt_stripe_event v1 had), then INSERTs the
row once with its outcome; events seen before (failed, pending) still go
through _attempt_stripe_event (v2) and its UPDATE. stripe_events.payload is
stored uncompressed (STORAGE EXTERNAL). Helpers that touch no table become
single SQL expressions the planner inlines (_stripe_id v2, _stripe_event_refs
v2, _lock_user v2, _lock_stripe_customer v2, _lock_stripe_event): SECURITY
DEFINER and SET search_path made each of their dozen-odd calls per event a
separate function execution. add_subscription_credits v3 sets the new balance
in the user's cache row (_store_cached_balance) instead of recomputing the
whole state. Results and statuses are unchanged.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(
        "revisions/0006_event_throughput/upgrade.sql",
        "functions/_stripe_id/v2.sql",
        "functions/_stripe_event_refs/v2.sql",
        "functions/_lock_user/v2.sql",
        "functions/_lock_stripe_customer/v2.sql",
        "functions/_lock_stripe_event/v1.sql",
        "functions/_store_cached_balance/v1.sql",
        "functions/add_subscription_credits/v3.sql",
        "functions/_dispatch_stripe_event/v2.sql",
        "functions/_attempt_stripe_event/v2.sql",
        "functions/process_stripe_event/v2.sql",
    )


def downgrade() -> None:
    apply_sql(
        "functions/process_stripe_event/v1.sql",
        "functions/_attempt_stripe_event/v1.sql",
        "functions/_dispatch_stripe_event/v1.sql",
        "functions/_stripe_event_refs/v1.sql",
        "functions/_stripe_id/v1.sql",
        "functions/_lock_stripe_customer/v1.sql",
        "functions/_lock_user/v1.sql",
        "functions/add_subscription_credits/v2.sql",
        "revisions/0006_event_throughput/downgrade.sql",
    )
