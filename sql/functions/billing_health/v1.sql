-- billing_health v1 (revision 0004): the seed's monitoring queries against its success metrics.
CREATE OR REPLACE FUNCTION public.billing_health()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_min_success constant numeric := coalesce(public._billing_setting('health_min_webhook_success_pct'), '99');
    v_min_hit constant numeric := coalesce(public._billing_setting('health_min_cache_hit_pct'), '80');
    v_min_reads constant numeric := coalesce(public._billing_setting('health_min_cache_reads'), '100');
    v_max_stale constant numeric := coalesce(public._billing_setting('health_max_cache_staleness_seconds'), '300');
    v_max_delay constant numeric := coalesce(public._billing_setting('health_max_cleanup_delay_seconds'), '300');
    v_cache jsonb;
    v_events record;
    v_ledger record;
    v_checks jsonb := '[]'::jsonb;
    v_value numeric;
    v_reads numeric;
BEGIN
    -- Cache health (the seed's get_subscription_cache_status()).
    v_cache := public.get_subscription_cache_status();

    -- Webhook events: the last 24 hours (the seed's daily check and success
    -- rate), and everything still not processed.
    SELECT
        count(*) FILTER (WHERE e.created_at > now() - interval '1 day') AS received_24h,
        count(*) FILTER (WHERE e.created_at > now() - interval '1 day' AND e.processed) AS processed_24h,
        count(*) FILTER (WHERE e.created_at > now() - interval '1 day' AND NOT e.processed) AS unprocessed_24h,
        count(*) FILTER (WHERE NOT e.processed) AS unprocessed,
        count(*) FILTER (WHERE e.status = 'failed') AS failed,
        count(*) FILTER (WHERE e.status = 'pending') AS pending,
        min(e.created_at) FILTER (WHERE NOT e.processed) AS oldest_unprocessed_at
    INTO v_events
    FROM public.stripe_events AS e;

    -- The ledger: users whose balance row disagrees with sum(ledger), or negative.
    SELECT
        (SELECT count(*) FROM public.credit_balances AS b) AS users,
        count(*) FILTER (WHERE 'balance_mismatch' = ANY(r.findings)) AS mismatched,
        count(*) FILTER (WHERE 'negative_balance' = ANY(r.findings)) AS negative,
        coalesce(
            jsonb_agg(jsonb_build_object('user_id', r.user_id, 'findings', r.findings) ORDER BY r.user_id)
            FILTER (WHERE cardinality(r.findings) > 0),
            '[]'::jsonb
        ) AS findings
    INTO v_ledger
    FROM public.reconcile_credits('infinity'::timestamptz) AS r;

    -- 1. Webhook processing success rate over 24 h: > 99 %.
    v_value := round(v_events.processed_24h * 100.0 / nullif(v_events.received_24h, 0), 2);
    v_checks := v_checks || jsonb_build_object(
        'name', 'webhook_success_rate', 'value', v_value, 'threshold', v_min_success, 'comparison', '>',
        'unit', '%',
        'status', CASE WHEN v_value IS NULL THEN 'no_data' WHEN v_value > v_min_success THEN 'ok' ELSE 'breach' END,
        'detail', format('%s of %s events received in the last 24 h processed, %s not processed',
            v_events.processed_24h, v_events.received_24h, v_events.unprocessed_24h)
    );

    -- 2. Credit balance integrity: 100 % (balance = sum(ledger) for every user).
    v_value := CASE
        WHEN v_ledger.users = 0 AND v_ledger.mismatched = 0 THEN 100
        ELSE round(
            greatest(v_ledger.users - v_ledger.mismatched, 0) * 100.0 / greatest(v_ledger.users, v_ledger.mismatched), 2
        )
    END;
    v_checks := v_checks || jsonb_build_object(
        'name', 'credit_balance_integrity', 'value', v_value, 'threshold', 100, 'comparison', '=', 'unit', '%',
        'status', CASE WHEN v_ledger.mismatched = 0 THEN 'ok' ELSE 'breach' END,
        'detail', format('%s of %s users with balance <> sum(ledger)', v_ledger.mismatched, v_ledger.users)
    );

    -- 3. No negative balance.
    v_checks := v_checks || jsonb_build_object(
        'name', 'negative_balances', 'value', v_ledger.negative, 'threshold', 0, 'comparison', '=', 'unit', 'users',
        'status', CASE WHEN v_ledger.negative = 0 THEN 'ok' ELSE 'breach' END,
        'detail', format('%s users with a negative balance or ledger sum', v_ledger.negative)
    );

    -- 4. Cache staleness: the oldest valid row is younger than 5 minutes.
    v_value := (v_cache ->> 'max_valid_age_seconds')::numeric;
    v_checks := v_checks || jsonb_build_object(
        'name', 'cache_staleness', 'value', v_value, 'threshold', v_max_stale, 'comparison', '<', 'unit', 's',
        'status', CASE WHEN v_value IS NULL THEN 'no_data' WHEN v_value < v_max_stale THEN 'ok' ELSE 'breach' END,
        'detail', CASE
            WHEN v_value IS NULL THEN format('no valid cache row (ttl %s s)', v_cache ->> 'ttl_seconds')
            ELSE format('oldest of %s valid cache rows cached %s s ago (ttl %s s)',
                v_cache ->> 'valid', v_value, v_cache ->> 'ttl_seconds')
        END
    );

    -- 5. Cache hit rate: > 80 %, judged once there are enough reads.
    v_reads := (v_cache ->> 'hits')::numeric + (v_cache ->> 'misses')::numeric;
    v_value := round((v_cache ->> 'hits')::numeric * 100 / nullif(v_reads, 0), 2);
    v_checks := v_checks || jsonb_build_object(
        'name', 'cache_hit_rate', 'value', v_value, 'threshold', v_min_hit, 'comparison', '>', 'unit', '%',
        'status', CASE
            WHEN v_reads < v_min_reads THEN 'no_data' WHEN v_value > v_min_hit THEN 'ok' ELSE 'breach'
        END,
        'detail', format('%s hits, %s misses since %s (judged from %s reads)',
            v_cache ->> 'hits', v_cache ->> 'misses', v_cache ->> 'stats_since', v_min_reads)
    );

    -- 6. The cleanup job, when pg_cron runs it: its last run is recent.
    v_value := round(extract(EPOCH FROM now() - (v_cache #>> '{last_cleanup,started_at}')::timestamptz), 3);
    v_checks := v_checks || jsonb_build_object(
        'name', 'cache_cleanup', 'value', v_value, 'threshold', v_max_delay, 'comparison', '<', 'unit', 's',
        'status', CASE
            WHEN NOT coalesce((v_cache #>> '{cleanup_job,active}')::boolean, false) THEN 'no_data'
            WHEN v_value < v_max_delay THEN 'ok'
            ELSE 'breach'
        END,
        'detail', CASE
            WHEN v_cache -> 'cleanup_job' = 'null'::jsonb THEN 'subscription_cache_cleanup is not scheduled in pg_cron'
            ELSE format('last run %s s ago, last pg_cron status %s',
                coalesce(v_value::text, 'never'), coalesce(v_cache #>> '{cleanup_job,last_status}', '-'))
        END
    );

    RETURN jsonb_build_object(
        'healthy', NOT jsonb_path_exists(v_checks, '$[*] ? (@.status == "breach")'),
        'breaches', jsonb_path_query_array(v_checks, '$[*] ? (@.status == "breach").name'),
        'checked_at', now(),
        'checks', v_checks,
        'cache', v_cache,
        'events', jsonb_build_object(
            'received_24h', v_events.received_24h,
            'processed_24h', v_events.processed_24h,
            'unprocessed_24h', v_events.unprocessed_24h,
            'unprocessed', v_events.unprocessed,
            'failed', v_events.failed,
            'pending', v_events.pending,
            'oldest_unprocessed_at', v_events.oldest_unprocessed_at
        ),
        'ledger', jsonb_build_object(
            'users', v_ledger.users,
            'mismatched', v_ledger.mismatched,
            'negative', v_ledger.negative,
            'findings', v_ledger.findings
        )
    );
END
$function$;

COMMENT ON FUNCTION public.billing_health() IS
'Contract: the runbook''s monitoring as jsonb {healthy, breaches, checked_at, checks, cache, events, ledger}. checks '
'is a list of {name, status (ok | breach | no_data), value, threshold, comparison, unit, detail}: '
'webhook_success_rate (processed share of the stripe_events received in the last 24 h, > '
'health_min_webhook_success_pct = 99), credit_balance_integrity (share of users whose balance = sum(ledger), = 100), '
'negative_balances (= 0), cache_staleness (age of the oldest valid cache row, < health_max_cache_staleness_seconds '
'= 300), cache_hit_rate (hits / reads since stats_since, > health_min_cache_hit_pct = 80, judged from '
'health_min_cache_reads = 100 reads), cache_cleanup (seconds since the last cleanup run, < '
'health_max_cleanup_delay_seconds = 300, judged only while pg_cron job subscription_cache_cleanup is active). '
'healthy is false exactly when a check is breach; breaches lists their names. cache = '
'get_subscription_cache_status(); events = counts received, processed and unprocessed in 24 h, unprocessed, failed '
'and pending overall, the oldest unprocessed; ledger = users, mismatched, negative and the findings of '
'reconcile_credits. Thresholds are billing_settings rows. Reads the whole ledger.';

REVOKE ALL ON FUNCTION public.billing_health() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.billing_health() TO service_role;
