"""baseline: billingdb's schema by concept (input limits, settings, customers, subscriptions, ledger, holds, cache, events, operations)

Revision ID: 0001
Revises:
Create Date: 2026-12-03

Why: one revision holding the whole schema, organized by concept, so that a
reader finds the definition of every table and function in one file of
``sql/baseline/`` (revisions 0001 to 0010 of the 0.1 development history,
never released, were squashed into it; CHANGELOG.md tells that history).
The files are pinned to this revision and never edited once released: a
later change is a new revision with files of its own.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: The concepts in dependency order (settings first; operations schedules the jobs last).
CONCEPTS = [
    "00_roles",
    "05_input",
    "10_settings",
    "20_customers",
    "30_subscriptions",
    "40_ledger",
    "50_holds",
    "60_cache",
    "70_events",
    "80_operations",
]


#: Run before anything is undone (by `billingdb db downgrade`, and as the downgrade's first step):
#: refuses (BD072) while a table it drops holds rows, unless data loss is allowed.
DOWNGRADE_GUARD = "baseline/downgrade_guard.sql"

#: The tables the downgrade drops (shown with their row counts before a downgrade runs).
DROPS_TABLES = [
    "public.credit_transactions",
    "public.stripe_events",
    "public.subscription_cache",
    "billingdb.credit_balances",
    "billingdb.credit_shortfalls",
    "billingdb.credit_holds",
    "billingdb.subscriptions",
    "billingdb.stripe_customers",
    "billingdb.plans",
    "billingdb.activity_log",
    "billingdb.billing_settings",
    "billingdb.subscription_status_transitions",
    "billingdb.cache_cleanup_runs",
    "billingdb.stripe_event_sync",
]


def upgrade() -> None:
    apply_sql(*(f"baseline/{concept}.sql" for concept in CONCEPTS))


def downgrade() -> None:
    apply_sql(DOWNGRADE_GUARD, "baseline/downgrade.sql")
