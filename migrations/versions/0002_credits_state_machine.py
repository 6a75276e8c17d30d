"""credits and state machine: plans, subscriptions, ledger, state cache functions

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Why: issue 3, the seed's subscription-state-machine.sql as versioned PL/pgSQL.
Stripe's subscription statuses become a state machine kept as data
(subscription_status_transitions) behind the one writer
apply_subscription_change(), with a per-subscription event watermark; credits
become an append-only ledger with a non-negative balance per user, spent by
use_credits_validated() in one conditional UPDATE and allocated at most once per
invoice by add_subscription_credits(); get_user_subscription_state() reads
through the 5-minute subscription_cache (0001), which every write refreshes in
its own transaction.

The ledger's trigger function is created before upgrade.sql, whose
credit_transactions table attaches it; the other functions follow the tables.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Internal helpers first (callers' bodies name them), then the public API.
FUNCTIONS = [
    "_billing_setting",
    "_lock_user",
    "_try_lock_user",
    "_spending_refusal",
    "_compute_subscription_state",
    "_store_subscription_cache",
    "_append_credit_transaction",
    "get_user_subscription_state",
    "update_subscription_cache",
    "use_credits_validated",
    "add_subscription_credits",
    "refund_credits",
    "grant_credits",
    "apply_subscription_change",
    "clear_expired_subscription_cache",
    "clear_all_subscription_cache",
    "get_subscription_cache_status",
    "set_plan",
]


def upgrade() -> None:
    apply_sql(
        "functions/_credit_transactions_append_only/v1.sql",
        "revisions/0002_credits_state_machine/upgrade.sql",
        *(f"functions/{name}/v1.sql" for name in FUNCTIONS),
    )


def downgrade() -> None:
    apply_sql("revisions/0002_credits_state_machine/downgrade.sql")
