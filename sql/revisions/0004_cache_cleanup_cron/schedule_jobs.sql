-- Revision 0004, last step: schedule billingdb's jobs in pg_cron when the
-- extension is installed in this database (on Supabase: the postgres
-- database). The check runs inside the database, so the offline
-- (`alembic upgrade head --sql`) script is the same with or without pg_cron.
DO $schedule$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        PERFORM public.schedule_billing_jobs();
    ELSE
        RAISE NOTICE 'billingdb: pg_cron is not installed in database %, no job scheduled', current_database()
            USING HINT = 'Run `billingdb maintenance run` from cron or a Kubernetes CronJob, or install pg_cron '
            'in this database and run `billingdb maintenance schedule`.';
    END IF;
END
$schedule$;
