-- trim_cron_job_run_details v1 (revision 0004): pg_cron's run log does not trim itself.
CREATE OR REPLACE FUNCTION public.trim_cron_job_run_details(older_than interval DEFAULT null)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_older_than constant interval := coalesce(
        trim_cron_job_run_details.older_than,
        make_interval(days => coalesce(public._billing_setting('cron_history_retention_days'), '7')::integer)
    );
    v_cron text;
    v_deleted integer;
BEGIN
    -- A non-negative age is required.
    IF v_older_than < interval '0' THEN
        RAISE EXCEPTION 'trim_cron_job_run_details: older_than must not be negative (older_than=%)', v_older_than
            USING ERRCODE = '22023';
    END IF;

    -- Nothing to trim where pg_cron is not installed; v_cron is its schema
    -- (dynamic SQL: the cron schema exists only there).
    SELECT 'cron' INTO v_cron FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron';
    IF v_cron IS NULL THEN
        RETURN NULL;
    END IF;

    -- Runs that ended (or, never ended, started) before the cut-off. pg_cron's
    -- row level security limits this to the jobs of this function's owner
    -- unless the owner is a superuser.
    EXECUTE format(
        'DELETE FROM %I.job_run_details AS d WHERE coalesce(d.end_time, d.start_time) < now() - $1', v_cron
    )
    USING v_older_than;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION public.trim_cron_job_run_details(interval) IS
'Contract: deletes the cron.job_run_details rows that ended more than older_than ago (default: setting '
'cron_history_retention_days, 7) and returns how many; returns null (and does nothing) when pg_cron is not '
'installed in this database. Deletes every job''s old runs that the function owner may see (pg_cron''s row level '
'security: the owner''s own jobs, all jobs for a superuser), as pg_cron''s documentation recommends. Errors: 22023 '
'when older_than is negative.';

REVOKE ALL ON FUNCTION public.trim_cron_job_run_details(interval) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.trim_cron_job_run_details(interval) TO service_role;
