-- get_subscription_cache_status v2 (revision 0004): also the last cleanup and the cleanup job.
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
    v_last record;
    v_job record;
BEGIN
    -- The rows: valid ones are what a read would use (expires_at > now());
    -- the oldest valid row is how stale a served state can be.
    SELECT
        count(*) AS total,
        count(*) FILTER (WHERE c.expires_at > now()) AS valid,
        count(*) FILTER (WHERE c.expires_at <= now()) AS expired,
        round(avg(extract(EPOCH FROM now() - c.cached_at)), 3) AS average_age_seconds,
        round(max(extract(EPOCH FROM now() - c.cached_at)) FILTER (WHERE c.expires_at > now()), 3)
        AS max_valid_age_seconds
    INTO v_rows
    FROM public.subscription_cache AS c;

    -- The counters (a sequence not yet used since its reset counts 0).
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END INTO v_hits FROM public.subscription_cache_hits AS q;
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END INTO v_misses
    FROM public.subscription_cache_misses AS q;

    -- The last cleanup run, if any.
    SELECT r.started_at, r.rows_deleted, r.duration_ms INTO v_last
    FROM public.cache_cleanup_runs AS r
    ORDER BY r.started_at DESC, r.id DESC
    LIMIT 1;

    -- The pg_cron job that runs the cleanup (no row without pg_cron).
    SELECT j.jobid, j.active, j.last_status, j.last_start INTO v_job
    FROM public.billing_cron_jobs() AS j
    WHERE j.job_name = 'subscription_cache_cleanup';

    RETURN jsonb_build_object(
        'total', v_rows.total,
        'valid', v_rows.valid,
        'expired', v_rows.expired,
        'hits', v_hits,
        'misses', v_misses,
        'hit_rate', round(v_hits::numeric / nullif(v_hits + v_misses, 0), 4),
        'stats_since', public._billing_setting('cache_stats_reset_at')::timestamptz,
        'average_age_seconds', v_rows.average_age_seconds,
        'max_valid_age_seconds', v_rows.max_valid_age_seconds,
        'ttl_seconds', coalesce(public._billing_setting('cache_ttl_seconds'), '300')::integer,
        'last_cleanup', CASE WHEN v_last.started_at IS NOT NULL THEN
            jsonb_build_object(
                'started_at', v_last.started_at,
                'rows_deleted', v_last.rows_deleted,
                'duration_ms', v_last.duration_ms,
                'seconds_ago', round(extract(EPOCH FROM now() - v_last.started_at), 3)
            )
        END,
        'cleanup_job', CASE WHEN v_job.jobid IS NOT NULL THEN
            jsonb_build_object(
                'jobid', v_job.jobid,
                'active', v_job.active,
                'last_status', v_job.last_status,
                'last_start', v_job.last_start
            )
        END
    );
END
$function$;

COMMENT ON FUNCTION public.get_subscription_cache_status() IS
'Contract: cache health as jsonb {total, valid, expired, hits, misses, hit_rate, stats_since, average_age_seconds, '
'max_valid_age_seconds, ttl_seconds, last_cleanup, cleanup_job}: row counts (valid: expires_at > now(), what a read '
'uses; expired: the rest), the hits and misses of get_user_subscription_state since stats_since (the last '
'clear_all_subscription_cache, else the migration), hit_rate = hits / (hits + misses) rounded to 4 places (null '
'when no reads), average_age_seconds = mean of now() - cached_at over all rows, max_valid_age_seconds = the oldest '
'valid row (the staleness a read can see; both null when there is no such row), the configured ttl_seconds, '
'last_cleanup = the last clear_expired_subscription_cache run {started_at, rows_deleted, duration_ms, seconds_ago} '
'(null when none), cleanup_job = the pg_cron job subscription_cache_cleanup {jobid, active, last_status, '
'last_start} (null when pg_cron is not installed here or the job is not scheduled).';

REVOKE ALL ON FUNCTION public.get_subscription_cache_status() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_subscription_cache_status() TO service_role;
