-- get_subscription_cache_status v1 (revision 0002).
CREATE OR REPLACE FUNCTION public.get_subscription_cache_status()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_rows record;
    v_hits bigint;
    v_misses bigint;
BEGIN
    -- The rows: valid ones are what a read would use (expires_at > now()).
    SELECT
        count(*) AS total,
        count(*) FILTER (WHERE c.expires_at > now()) AS valid,
        count(*) FILTER (WHERE c.expires_at <= now()) AS expired,
        round(avg(extract(EPOCH FROM now() - c.cached_at)), 3) AS average_age_seconds
    INTO v_rows
    FROM public.subscription_cache AS c;

    -- The counters (a sequence not yet used since its reset counts 0).
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END INTO v_hits FROM public.subscription_cache_hits AS q;
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END INTO v_misses
    FROM public.subscription_cache_misses AS q;

    RETURN jsonb_build_object(
        'total', v_rows.total,
        'valid', v_rows.valid,
        'expired', v_rows.expired,
        'hits', v_hits,
        'misses', v_misses,
        'hit_rate', round(v_hits::numeric / nullif(v_hits + v_misses, 0), 4),
        'stats_since', public._billing_setting('cache_stats_reset_at')::timestamptz,
        'average_age_seconds', v_rows.average_age_seconds,
        'ttl_seconds', coalesce(public._billing_setting('cache_ttl_seconds'), '300')::integer
    );
END
$function$;

COMMENT ON FUNCTION public.get_subscription_cache_status() IS
'Contract: cache health as jsonb {total, valid, expired, hits, misses, hit_rate, stats_since, average_age_seconds, '
'ttl_seconds}: row counts (valid: expires_at > now(), what a read uses; expired: the rest), the hits and misses of '
'get_user_subscription_state since stats_since (the last clear_all_subscription_cache, else the migration), '
'hit_rate = hits / (hits + misses) rounded to 4 places (null when no reads), average_age_seconds = mean of '
'now() - cached_at over all rows (null when empty), and the configured ttl_seconds.';

REVOKE ALL ON FUNCTION public.get_subscription_cache_status() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_subscription_cache_status() TO service_role;
