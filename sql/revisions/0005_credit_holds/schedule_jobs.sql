-- Revision 0005, last step: where pg_cron is installed in this database, schedule
-- billingdb's jobs again (billing_cron_jobs v2 lists credit_holds_release; the
-- others are updated in place, by name). The check runs inside the database,
-- so the offline script is the same with or without pg_cron.
DO $schedule$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        PERFORM public.schedule_billing_jobs();
    ELSE
        RAISE NOTICE 'billingdb: pg_cron is not installed in database %, credit_holds_release not scheduled',
            current_database()
            USING HINT = 'Run `billingdb maintenance run` (it calls release_expired_credit_holds()) from cron '
            'or a Kubernetes CronJob every minute, or install pg_cron and run `billingdb maintenance schedule`.';
    END IF;
END
$schedule$;
