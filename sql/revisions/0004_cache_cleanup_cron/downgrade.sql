-- Revision 0004 down: unschedule the pg_cron jobs (when pg_cron is installed
-- in this database), then remove every object 0004 created. The revision
-- re-creates clear_expired_subscription_cache and get_subscription_cache_status
-- v1 right after this file.

DO $unschedule$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        PERFORM public.unschedule_billing_jobs();
    ELSE
        RAISE NOTICE 'billingdb: pg_cron is not installed in database %, no job to unschedule', current_database();
    END IF;
END
$unschedule$;

DROP FUNCTION IF EXISTS public.reconcile_credits(timestamptz);
DROP FUNCTION IF EXISTS public.billing_health();
DROP FUNCTION IF EXISTS public.unschedule_billing_jobs();
DROP FUNCTION IF EXISTS public.schedule_billing_jobs();
DROP FUNCTION IF EXISTS public.billing_cron_jobs();
DROP FUNCTION IF EXISTS public.trim_cron_job_run_details(interval);
DROP FUNCTION IF EXISTS public.purge_stripe_events_batch(interval, integer);
DROP FUNCTION IF EXISTS public.get_cache_cleanup_history(integer);

DELETE FROM public.billing_settings AS s
WHERE s.name IN (
    'stripe_events_retention_days',
    'cron_history_retention_days',
    'health_min_webhook_success_pct',
    'health_min_cache_hit_pct',
    'health_min_cache_reads',
    'health_max_cache_staleness_seconds',
    'health_max_cleanup_delay_seconds'
);

ALTER TABLE public.billing_settings
DROP CONSTRAINT IF EXISTS billing_settings_maintenance_numeric;

DROP TABLE IF EXISTS public.cache_cleanup_runs;
