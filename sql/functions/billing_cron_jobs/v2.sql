-- billing_cron_jobs v2 (revision 0005): the one list of billingdb's pg_cron jobs, now with credit_holds_release.
CREATE OR REPLACE FUNCTION public.billing_cron_jobs()
RETURNS TABLE (
    job_name text,
    schedule text,
    command text,
    description text,
    jobid bigint,
    active boolean,
    last_status text,
    last_start timestamptz,
    last_end timestamptz,
    last_message text
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_cron text;
    v_def record;
    v_jobid bigint;
    v_active boolean;
    v_status text;
    v_start timestamptz;
    v_end timestamptz;
    v_message text;
BEGIN
    -- pg_cron's schema where it is installed in this database, else null. The
    -- queries on it are dynamic SQL: the cron schema exists only there.
    SELECT 'cron' INTO v_cron FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron';

    -- The jobs, by name: what schedule_billing_jobs installs and
    -- unschedule_billing_jobs removes. Times are pg_cron's (UTC by default).
    FOR v_def IN
        SELECT d.job_name, d.schedule, d.command, d.description
        FROM (
            VALUES
            (
                1, 'subscription_cache_cleanup', '* * * * *',
                'SELECT public.clear_expired_subscription_cache()',
                'every minute: delete expired subscription_cache rows, record the run'
            ),
            (
                2, 'stripe_events_purge', '*/5 * * * *',
                'SELECT public.purge_stripe_events_batch()',
                'every 5 minutes: delete up to 1000 done stripe_events older than stripe_events_retention_days'
            ),
            (
                3, 'cron_job_run_details_trim', '27 3 * * *',
                'SELECT public.trim_cron_job_run_details()',
                'daily 03:27: delete cron.job_run_details older than cron_history_retention_days'
            ),
            (
                4, 'credit_holds_release', '* * * * *',
                'SELECT public.release_expired_credit_holds()',
                'every minute: give back the credits of expired credit holds'
            )
        ) AS d (ord, job_name, schedule, command, description)
        ORDER BY d.ord
    LOOP
        billing_cron_jobs.job_name := v_def.job_name;
        billing_cron_jobs.schedule := v_def.schedule;
        billing_cron_jobs.command := v_def.command;
        billing_cron_jobs.description := v_def.description;
        billing_cron_jobs.jobid := NULL;
        billing_cron_jobs.active := NULL;
        billing_cron_jobs.last_status := NULL;
        billing_cron_jobs.last_start := NULL;
        billing_cron_jobs.last_end := NULL;
        billing_cron_jobs.last_message := NULL;

        -- Where pg_cron is installed: the scheduled job of this name in this
        -- database, and its last run.
        IF v_cron IS NOT NULL THEN
            EXECUTE format(
                'SELECT j.jobid, j.active FROM %I.job AS j WHERE j.jobname = $1 '
                'AND j.database = current_database() AND j.username = current_user ORDER BY j.jobid DESC LIMIT 1',
                v_cron
            )
            INTO v_jobid, v_active USING v_def.job_name;
            IF v_jobid IS NOT NULL THEN
                billing_cron_jobs.jobid := v_jobid;
                billing_cron_jobs.active := v_active;
                EXECUTE format(
                    'SELECT d.status, d.start_time, d.end_time, d.return_message FROM %I.job_run_details AS d '
                    'WHERE d.jobid = $1 ORDER BY d.runid DESC LIMIT 1',
                    v_cron
                )
                INTO v_status, v_start, v_end, v_message USING v_jobid;
                billing_cron_jobs.last_status := v_status;
                billing_cron_jobs.last_start := v_start;
                billing_cron_jobs.last_end := v_end;
                billing_cron_jobs.last_message := v_message;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$function$;

COMMENT ON FUNCTION public.billing_cron_jobs() IS
'Contract: one row per pg_cron job billingdb defines (job_name, schedule, command, description): '
'subscription_cache_cleanup (every minute: clear_expired_subscription_cache), stripe_events_purge (every 5 minutes: '
'one purge_stripe_events_batch), cron_job_run_details_trim (daily 03:27: trim_cron_job_run_details), '
'credit_holds_release (every minute: release_expired_credit_holds); and, when the '
'job is scheduled in this database for the function owner, its jobid, active, and the status, start, end and '
'message of its last run (all null when pg_cron is not installed here or the job is not scheduled).';

REVOKE ALL ON FUNCTION public.billing_cron_jobs() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.billing_cron_jobs() TO service_role;
