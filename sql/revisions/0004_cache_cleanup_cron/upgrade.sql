-- Revision 0004: cache cleanup runs, maintenance settings and the runbook's thresholds.
--
-- Why: the seed's cache-refresh-cron.sql deleted expired cache rows every
-- minute under pg_cron and kept a history of those runs, and its runbook
-- (monitoring queries, weekly reconciliation, monthly archive of old events)
-- was a page of SQL to paste. This revision keeps the history
-- (cache_cleanup_runs, written by clear_expired_subscription_cache v2), adds
-- the tunables of the maintenance jobs and of the health checks to
-- billing_settings, and (in schedule_jobs.sql, after the functions) schedules
-- the jobs in pg_cron when the extension is installed in this database.

-- One row per run of clear_expired_subscription_cache(): when, how many, how long.
CREATE TABLE public.cache_cleanup_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    rows_deleted integer NOT NULL CHECK (rows_deleted >= 0),
    duration_ms numeric(12, 3) NOT NULL CHECK (duration_ms >= 0)
);

CREATE INDEX idx_cache_cleanup_runs_started_at
ON public.cache_cleanup_runs (started_at);

COMMENT ON TABLE public.cache_cleanup_runs IS
'One row per clear_expired_subscription_cache() run (started_at, rows_deleted, duration_ms); rows older than '
'7 days are deleted by the cleanup itself. Read with get_cache_cleanup_history(n).';

ALTER TABLE public.cache_cleanup_runs ENABLE ROW LEVEL SECURITY;

CREATE POLICY service_role_all ON public.cache_cleanup_runs
FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON TABLE public.cache_cleanup_runs FROM public, anon, authenticated;

-- Written only by the cleanup function; service_role reads it.
GRANT SELECT ON TABLE public.cache_cleanup_runs TO service_role;

-- The new tunables are numbers (percentages, seconds, days, counts).
ALTER TABLE public.billing_settings
ADD CONSTRAINT billing_settings_maintenance_numeric CHECK (
    name NOT IN (
        'stripe_events_retention_days',
        'cron_history_retention_days',
        'health_min_webhook_success_pct',
        'health_min_cache_hit_pct',
        'health_min_cache_reads',
        'health_max_cache_staleness_seconds',
        'health_max_cleanup_delay_seconds'
    )
    OR value ~ '^[0-9]{1,9}(\.[0-9]{1,4})?$'
);

INSERT INTO public.billing_settings (name, value, description) VALUES
(
    'stripe_events_retention_days', '90',
    'Processed stripe_events older than this many days are deleted by purge_stripe_events_batch (at least 30).'
),
(
    'cron_history_retention_days', '7',
    'cron.job_run_details rows older than this many days are deleted by trim_cron_job_run_details.'
),
(
    'health_min_webhook_success_pct', '99',
    'billing_health: breach when the share of stripe_events of the last 24 h that are processed is not above this.'
),
(
    'health_min_cache_hit_pct', '80',
    'billing_health: breach when the cache hit rate (hits / reads since cache_stats_reset_at) is not above this.'
),
(
    'health_min_cache_reads', '100',
    'billing_health: the hit rate is judged only after this many reads (hits + misses).'
),
(
    'health_max_cache_staleness_seconds', '300',
    'billing_health: breach when a valid cache row is this old or older (now() - cached_at).'
),
(
    'health_max_cleanup_delay_seconds', '300',
    'billing_health: breach when subscription_cache_cleanup is scheduled in pg_cron but did not run for this long.'
);
