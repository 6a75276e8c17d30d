-- Settings and the activity log: the tunables every other concept reads, and
-- what happened to a user's billing, for support and the runbook.

-- Tunables, read through billingdb._billing_setting(name).
CREATE TABLE billingdb.billing_settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    description text,
    CHECK (name <> 'cache_ttl_seconds' OR value ~ '^[0-9]{1,6}$'),
    CHECK (name <> 'past_due_can_spend' OR value IN ('true', 'false')),
    CHECK (name <> 'user_id_metadata_key' OR value ~ '^[A-Za-z0-9_.-]{1,40}$'),
    -- The maintenance and health tunables are numbers (percentages, seconds, days, counts).
    CONSTRAINT billing_settings_maintenance_numeric CHECK (
        name NOT IN (
            'stripe_events_retention_days',
            'cron_history_retention_days',
            'health_min_webhook_success_pct',
            'health_min_cache_hit_pct',
            'health_min_cache_reads',
            'health_max_cache_staleness_seconds',
            'health_max_cleanup_delay_seconds',
            'health_max_event_sync_age_seconds'
        )
        OR value ~ '^[0-9]{1,9}(\.[0-9]{1,4})?$'
    )
);

COMMENT ON TABLE billingdb.billing_settings IS
'Billing tunables by name (cache_ttl_seconds, past_due_can_spend, cache_stats_reset_at); read with _billing_setting().';

INSERT INTO billingdb.billing_settings (name, value, description) VALUES
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
    'user_id_metadata_key', 'user_id',
    'The metadata key under which Stripe objects (customer, subscription, Checkout session) carry the app''s user id '
    '(apps using Clerk often store clerk_user_id).'
),
(
    'health_max_cleanup_delay_seconds', '300',
    'billing_health: breach when subscription_cache_cleanup is scheduled in pg_cron but did not run for this long.'
),
(
    'health_max_event_sync_age_seconds', '86400',
    'billing_health: breach when billingdb stripe sync-events has run but not succeeded for this long.'
);

-- What happened to a user's billing, for support and the runbook.
CREATE TABLE billingdb.activity_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text,
    activity_type text NOT NULL CHECK (btrim(activity_type) <> ''),
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_activity_log_user_created ON billingdb.activity_log (user_id, created_at);

COMMENT ON TABLE billingdb.activity_log IS
'Billing activity per user (credits allocated, granted, refunded; subscription created, status changed, '
'transition refused) with details as jsonb.';

-- Private: row level security with no policy (only the owner, through the
-- entry points, reads or writes), and no privilege for any other role.
ALTER TABLE billingdb.billing_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE billingdb.activity_log ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON TABLE billingdb.billing_settings, billingdb.activity_log
FROM public, anon, authenticated, service_role;

CREATE OR REPLACE FUNCTION billingdb._billing_setting(name text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
DECLARE
    v_name constant text := _billing_setting.name;
BEGIN
    -- One setting by name; null when it is not set (callers apply their default).
    RETURN (SELECT s.value FROM billingdb.billing_settings AS s WHERE s.name = v_name);
END
$function$;

COMMENT ON FUNCTION billingdb._billing_setting(text) IS
'Internal. Contract: the value of billing_settings.name as text, or null when no such setting exists (the caller '
'applies its documented default). Settings: cache_ttl_seconds (default 300), past_due_can_spend (default true), '
'cache_stats_reset_at.';

REVOKE ALL ON FUNCTION billingdb._billing_setting(text) FROM public, anon, authenticated;

-- set_billing_setting: the one writer of the settings (service_role has no
-- privilege on the table itself).
CREATE OR REPLACE FUNCTION public.set_billing_setting(name text, value text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_name constant text := set_billing_setting.name;
    v_value constant text := set_billing_setting.value;
    v_previous text;
BEGIN
    -- Arguments: a known tunable and a value of its kind (the table's CHECKs,
    -- asked first so that a refusal is a 22023 with the setting's name).
    SELECT s.value INTO v_previous FROM billingdb.billing_settings AS s WHERE s.name = v_name FOR UPDATE;
    IF NOT FOUND OR v_name = 'cache_stats_reset_at' THEN
        RAISE EXCEPTION 'set_billing_setting: unknown setting (name=%)', coalesce(quote_literal(v_name), 'NULL')
            USING ERRCODE = '22023', HINT = format(
                'Known settings: %s.',
                (
                    SELECT string_agg(s.name, ', ' ORDER BY s.name) FROM billingdb.billing_settings AS s
                    WHERE s.name <> 'cache_stats_reset_at'
                )
            );
    END IF;
    IF
        v_value IS NULL
        OR length(v_value) > 100
        OR (v_name = 'cache_ttl_seconds' AND v_value !~ '^[0-9]{1,6}$')
        OR (v_name = 'past_due_can_spend' AND v_value NOT IN ('true', 'false'))
        OR (v_name = 'user_id_metadata_key' AND v_value !~ '^[A-Za-z0-9_.-]{1,40}$')
        OR (
            v_name NOT IN ('cache_ttl_seconds', 'past_due_can_spend', 'user_id_metadata_key')
            AND v_value !~ '^[0-9]{1,9}(\.[0-9]{1,4})?$'
        )
        OR (v_name = 'stripe_events_retention_days' AND v_value::numeric < 30)
    THEN
        RAISE EXCEPTION 'set_billing_setting: invalid value (name=%, value=%)',
            v_name, coalesce(quote_literal(left(v_value, 100)), 'NULL')
            USING ERRCODE = '22023', HINT = (
                SELECT s.description FROM billingdb.billing_settings AS s WHERE s.name = v_name
            );
    END IF;

    -- The new value, and who changed what in the activity log.
    UPDATE billingdb.billing_settings AS s SET value = v_value WHERE s.name = v_name;
    INSERT INTO billingdb.activity_log (user_id, activity_type, details)
    VALUES (
        NULL, 'setting_changed',
        jsonb_build_object('name', v_name, 'value', v_value, 'previous', v_previous, 'by', session_user)
    );
    RETURN jsonb_build_object('name', v_name, 'value', v_value, 'previous', v_previous);
END
$function$;

COMMENT ON FUNCTION public.set_billing_setting(text, text) IS
'Contract: sets one billing tunable (billing_settings.name) to value and logs setting_changed in activity_log '
'(with the previous value and session_user). Returns jsonb {name, value, previous}. Settings: cache_ttl_seconds '
'(seconds, 0 to 999999), past_due_can_spend (true or false), user_id_metadata_key (a metadata key: letters, digits, '
'_ . -), stripe_events_retention_days (at least 30), '
'cron_history_retention_days and the health_* thresholds (numbers). Errors: 22023 for an unknown name (the hint '
'lists the known ones; cache_stats_reset_at is set by clear_all_subscription_cache) or a value not of the '
'setting''s kind (the hint is the setting''s description); nothing changes.';

REVOKE ALL ON FUNCTION public.set_billing_setting(text, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.set_billing_setting(text, text) TO service_role;
