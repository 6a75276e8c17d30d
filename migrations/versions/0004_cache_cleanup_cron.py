"""cache cleanup cron: cleanup history, pg_cron jobs, maintenance, health and reconciliation

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Why: issue 5, the seed's cache-refresh-cron.sql and its runbook as functions.
clear_expired_subscription_cache moves to v2 and records each run in
cache_cleanup_runs (get_cache_cleanup_history reads it back, and
get_subscription_cache_status v2 reports the last run and the pg_cron job);
purge_stripe_events_batch deletes one short batch of done events older than
90 days (callers loop, one transaction per batch: a looping procedure could
COMMIT only without SECURITY DEFINER and SET search_path);
trim_cron_job_run_details keeps pg_cron's run log short; billing_health and
reconcile_credits are the runbook's monitoring and weekly checks against its
success metrics. When pg_cron is installed in this database
the last step schedules the jobs (schedule_billing_jobs); otherwise it raises a
NOTICE and schedules nothing. The check is inside SQL, so the offline script is
the same either way. Downgrade unschedules the jobs (same guard), drops the new
objects and re-creates the two v1 functions.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Helpers and the job list first (callers' bodies name them), then the public API.
FUNCTIONS = [
    "billing_cron_jobs",
    "get_cache_cleanup_history",
    "purge_stripe_events_batch",
    "trim_cron_job_run_details",
    "schedule_billing_jobs",
    "unschedule_billing_jobs",
    "reconcile_credits",
]


def upgrade() -> None:
    apply_sql(
        "revisions/0004_cache_cleanup_cron/upgrade.sql",
        *(f"functions/{name}/v1.sql" for name in FUNCTIONS),
        "functions/clear_expired_subscription_cache/v2.sql",
        "functions/get_subscription_cache_status/v2.sql",
        "functions/billing_health/v1.sql",
        "revisions/0004_cache_cleanup_cron/schedule_jobs.sql",
    )


def downgrade() -> None:
    apply_sql(
        "revisions/0004_cache_cleanup_cron/downgrade.sql",
        "functions/clear_expired_subscription_cache/v1.sql",
        "functions/get_subscription_cache_status/v1.sql",
    )
