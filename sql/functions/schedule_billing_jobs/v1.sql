-- schedule_billing_jobs v1 (revision 0004).
CREATE OR REPLACE FUNCTION public.schedule_billing_jobs()
RETURNS TABLE (job_name text, schedule text, command text, jobid bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_cron text;
    v_def record;
BEGIN
    -- pg_cron must be installed in this database (its cron.database_name);
    -- v_cron is its schema (dynamic SQL: the cron schema exists only there).
    SELECT 'cron' INTO v_cron FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron';
    IF v_cron IS NULL THEN
        RAISE EXCEPTION 'schedule_billing_jobs: pg_cron is not installed in this database (database=%)',
            current_database()
            USING ERRCODE = 'BD050',
            HINT = 'CREATE EXTENSION pg_cron in the database named by cron.database_name (it must be preloaded), '
            'or run `billingdb maintenance run` from cron or a Kubernetes CronJob instead.';
    END IF;

    -- Each job by name: cron.schedule(name, ...) creates it, or updates the
    -- job of that name, so scheduling again is harmless. The jobs run as this
    -- function's owner, in this database.
    FOR v_def IN SELECT d.job_name, d.schedule, d.command FROM public.billing_cron_jobs() AS d LOOP
        schedule_billing_jobs.job_name := v_def.job_name;
        schedule_billing_jobs.schedule := v_def.schedule;
        schedule_billing_jobs.command := v_def.command;
        EXECUTE format('SELECT %I.schedule($1, $2, $3)', v_cron)
        INTO schedule_billing_jobs.jobid
        USING v_def.job_name, v_def.schedule, v_def.command;
        RETURN NEXT;
    END LOOP;
END
$function$;

COMMENT ON FUNCTION public.schedule_billing_jobs() IS
'Contract: schedules (or updates) billingdb''s pg_cron jobs by name, as listed by billing_cron_jobs() '
'(subscription_cache_cleanup every minute, stripe_events_purge every 5 minutes, cron_job_run_details_trim daily), to '
'run in this database as the function owner, and returns one row per job (job_name, schedule, command, jobid). '
'Idempotent. Revision 0004 calls it when pg_cron is installed; `billingdb maintenance schedule` calls it later. '
'Errors: BD050 when pg_cron is not installed in this database.';

REVOKE ALL ON FUNCTION public.schedule_billing_jobs() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.schedule_billing_jobs() TO service_role;
