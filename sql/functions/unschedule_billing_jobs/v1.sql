-- unschedule_billing_jobs v1 (revision 0004).
CREATE OR REPLACE FUNCTION public.unschedule_billing_jobs()
RETURNS TABLE (job_name text, jobid bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_cron text;
    v_job record;
BEGIN
    -- pg_cron must be installed in this database; v_cron is its schema
    -- (dynamic SQL: the cron schema exists only there).
    SELECT 'cron' INTO v_cron FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron';
    IF v_cron IS NULL THEN
        RAISE EXCEPTION 'unschedule_billing_jobs: pg_cron is not installed in this database (database=%)',
            current_database()
            USING ERRCODE = 'BD050', HINT = 'Without pg_cron no billingdb job is scheduled here.';
    END IF;

    -- Each of billingdb's jobs that is scheduled here (a missing one is not
    -- an error: unscheduling twice is harmless).
    FOR v_job IN
        SELECT d.job_name, d.jobid FROM public.billing_cron_jobs() AS d WHERE d.jobid IS NOT NULL
    LOOP
        EXECUTE format('SELECT %I.unschedule($1::bigint)', v_cron) USING v_job.jobid;
        unschedule_billing_jobs.job_name := v_job.job_name;
        unschedule_billing_jobs.jobid := v_job.jobid;
        RETURN NEXT;
    END LOOP;
END
$function$;

COMMENT ON FUNCTION public.unschedule_billing_jobs() IS
'Contract: unschedules billingdb''s pg_cron jobs (billing_cron_jobs()) that are scheduled in this database for the '
'function owner and returns one row per job removed (job_name, jobid); none when nothing is scheduled. Their '
'cron.job_run_details rows stay. Revision 0004''s downgrade calls it when pg_cron is installed. Errors: BD050 when '
'pg_cron is not installed in this database.';

REVOKE ALL ON FUNCTION public.unschedule_billing_jobs() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.unschedule_billing_jobs() TO service_role;
