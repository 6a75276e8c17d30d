-- Settings and the activity log: the tunables every other concept reads, and
-- what happened to a user's billing, for support and the runbook.

-- Tunables, read through public._billing_setting(name).
CREATE TABLE public.billing_settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    description text,
    CHECK (name <> 'cache_ttl_seconds' OR value ~ '^[0-9]{1,6}$'),
    CHECK (name <> 'past_due_can_spend' OR value IN ('true', 'false')),
    -- The maintenance and health tunables are numbers (percentages, seconds, days, counts).
    CONSTRAINT billing_settings_maintenance_numeric CHECK (
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
    )
);

COMMENT ON TABLE public.billing_settings IS
'Billing tunables by name (cache_ttl_seconds, past_due_can_spend, cache_stats_reset_at); read with _billing_setting().';

INSERT INTO public.billing_settings (name, value, description) VALUES
(
    'cache_ttl_seconds', '300',
    'Seconds a subscription_cache row stays valid after it is computed.'
),
(
    'past_due_can_spend', 'true',
    'true: a past_due subscription may still spend credits (grace while Stripe retries the payment).'
),
(
    'cache_stats_reset_at', now()::text,
    'Since when the cache hit/miss counters count (set by clear_all_subscription_cache).'
),
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

-- What happened to a user's billing, for support and the runbook.
CREATE TABLE public.activity_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text,
    activity_type text NOT NULL CHECK (btrim(activity_type) <> ''),
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_activity_log_user_created ON public.activity_log (user_id, created_at);

COMMENT ON TABLE public.activity_log IS
'Billing activity per user (credits allocated, granted, refunded; subscription created, status changed, '
'transition refused) with details as jsonb.';

-- Row level security; service_role gets a policy so that a plain PostgreSQL
-- behaves like Supabase (where service_role bypasses RLS).
ALTER TABLE public.billing_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.activity_log ENABLE ROW LEVEL SECURITY;

CREATE POLICY service_role_all ON public.billing_settings
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.activity_log
FOR ALL TO service_role USING (true) WITH CHECK (true);

-- Supabase's default privileges grant the client roles everything: take it back.
REVOKE ALL ON TABLE public.billing_settings, public.activity_log FROM public, anon, authenticated;

-- service_role edits the settings; the activity log is append-only.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.billing_settings TO service_role;
GRANT SELECT, INSERT ON TABLE public.activity_log TO service_role;

CREATE OR REPLACE FUNCTION public._billing_setting(name text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
DECLARE
    v_name constant text := _billing_setting.name;
BEGIN
    -- One setting by name; null when it is not set (callers apply their default).
    RETURN (SELECT s.value FROM public.billing_settings AS s WHERE s.name = v_name);
END
$function$;

COMMENT ON FUNCTION public._billing_setting(text) IS
'Internal. Contract: the value of billing_settings.name as text, or null when no such setting exists (the caller '
'applies its documented default). Settings: cache_ttl_seconds (default 300), past_due_can_spend (default true), '
'cache_stats_reset_at.';

REVOKE ALL ON FUNCTION public._billing_setting(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._billing_setting(text) TO service_role;
