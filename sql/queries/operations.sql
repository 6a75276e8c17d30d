-- name: billing_health
-- The runbook's monitoring against its success metrics: {healthy, breaches, checks, cache, events, ledger}.
SELECT public.billing_health() AS result;

-- name: reconcile_credits
-- The weekly reconciliation: per user the period's sums, balance vs ledger, findings first.
SELECT
    r.user_id,
    r.allocated,
    r.used,
    r.refunded,
    r.adjusted,
    r.expired,
    r.ledger_balance,
    r.balance,
    r.last_balance_after,
    r.findings
FROM public.reconcile_credits(%(since)s::timestamptz) AS r;

-- name: get_cache_cleanup_history
-- The last n cache cleanup runs, newest first.
SELECT
    h.started_at,
    h.rows_deleted,
    h.duration_ms
FROM public.get_cache_cleanup_history(%(n)s) AS h;

-- name: purge_stripe_events_batch
-- Delete one batch of done Stripe events older than the retention; returns how many.
SELECT public.purge_stripe_events_batch(%(older_than)s::interval, %(batch_size)s) AS result;

-- name: trim_cron_job_run_details
-- Trim pg_cron's run log; null when pg_cron is not installed here.
SELECT public.trim_cron_job_run_details(%(older_than)s::interval) AS result;

-- name: billing_cron_jobs
-- billingdb's pg_cron jobs, scheduled or not, with their last run.
SELECT
    j.job_name,
    j.schedule,
    j.command,
    j.description,
    j.jobid,
    j.active,
    j.last_status,
    j.last_start,
    j.last_end,
    j.last_message
FROM public.billing_cron_jobs() AS j;

-- name: schedule_billing_jobs
-- Schedule (or update) the pg_cron jobs; BD050 when pg_cron is not installed here.
SELECT
    j.job_name,
    j.schedule,
    j.command,
    j.jobid
FROM public.schedule_billing_jobs() AS j;

-- name: unschedule_billing_jobs
-- Remove the pg_cron jobs; BD050 when pg_cron is not installed here.
SELECT
    j.job_name,
    j.jobid
FROM public.unschedule_billing_jobs() AS j;

-- name: unallocated_paid_invoices
-- The weekly check against Stripe's invoices: every invoice a paid event was
-- received for (since the cut-off, null: ever) that has no allocation in the
-- ledger, unless processing ignored it (an invoice without a subscription).
-- Processing allocates every other paid invoice, so each row is a failed or
-- pending event, or a lost allocation.
SELECT
    e.object_id AS invoice_id,
    e.customer_id,
    c.user_id,
    min(e.created_at) AS received_at,
    string_agg(DISTINCT e.status, ',' ORDER BY e.status) AS statuses,
    max(e.error) AS error
FROM public.stripe_events AS e
LEFT JOIN billingdb.stripe_customers AS c ON e.customer_id = c.stripe_customer_id
WHERE
    e.event_type IN ('invoice.paid', 'invoice.payment_succeeded')
    AND e.created_at >= coalesce(%(since)s::timestamptz, '-infinity'::timestamptz)  -- noqa: RF02
    AND NOT EXISTS (
        SELECT FROM public.credit_transactions AS t
        WHERE t.metadata ->> 'invoice_id' = e.object_id AND t.transaction_type = 'allocation'
    )
GROUP BY e.object_id, e.customer_id, c.user_id
HAVING NOT bool_or(e.status = 'ignored')
ORDER BY received_at, invoice_id;
