-- clear_expired_subscription_cache v2 (revision 0004): records each run.
CREATE OR REPLACE FUNCTION public.clear_expired_subscription_cache()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_started constant timestamptz := clock_timestamp();
    v_deleted integer;
BEGIN
    -- Rows a read would not use any more (a row refreshed meanwhile is
    -- re-checked by DELETE and kept).
    DELETE FROM public.subscription_cache AS c WHERE c.expires_at <= now();
    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    -- Record the run: when it started, what it deleted, how long it took.
    INSERT INTO public.cache_cleanup_runs (started_at, rows_deleted, duration_ms)
    VALUES (
        v_started,
        v_deleted,
        round((extract(EPOCH FROM clock_timestamp() - v_started) * 1000)::numeric, 3)
    );

    -- Keep a week of history (10080 rows at one run a minute).
    DELETE FROM public.cache_cleanup_runs AS r WHERE r.started_at < now() - interval '7 days';

    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION public.clear_expired_subscription_cache() IS
'Contract: deletes the subscription_cache rows with expires_at <= now() and returns how many; the hit/miss counters '
'are kept. Each call records a row in cache_cleanup_runs (started_at, rows_deleted, duration_ms) and deletes the '
'runs older than 7 days. Safe to run at any time; pg_cron job subscription_cache_cleanup runs it every minute.';

REVOKE ALL ON FUNCTION public.clear_expired_subscription_cache() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.clear_expired_subscription_cache() TO service_role;
