-- Operations: the maintenance jobs (pg_cron where it is installed, else
-- `billingdb maintenance run`), and the seed's runbook as functions: health
-- against the success metrics and the weekly reconciliation.

-- billing_cron_jobs: the one list of billingdb's pg_cron jobs.
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
SET search_path = pg_catalog, pg_temp
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

CREATE OR REPLACE FUNCTION public.schedule_billing_jobs()
RETURNS TABLE (job_name text, schedule text, command text, jobid bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
    -- The jobs are scheduled as this function's owner, who must be allowed to use pg_cron.
    IF NOT has_schema_privilege('cron', 'USAGE') THEN
        RAISE EXCEPTION 'schedule_billing_jobs: role % may not use pg_cron (no USAGE on schema cron)', current_user
            USING ERRCODE = 'BD051',
            HINT = format(
                'As a superuser: GRANT USAGE ON SCHEMA cron TO %I; then run `billingdb maintenance schedule`.',
                current_user
            );
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
'Idempotent. The migration calls it when pg_cron is installed; `billingdb maintenance schedule` calls it later. '
'Errors: BD050 when pg_cron is not installed in this database; BD051 when the owner has no USAGE on schema cron.';

REVOKE ALL ON FUNCTION public.schedule_billing_jobs() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.schedule_billing_jobs() TO service_role;

CREATE OR REPLACE FUNCTION public.unschedule_billing_jobs()
RETURNS TABLE (job_name text, jobid bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
'cron.job_run_details rows stay. The baseline''s downgrade calls it when pg_cron is installed. Errors: BD050 when '
'pg_cron is not installed in this database.';

REVOKE ALL ON FUNCTION public.unschedule_billing_jobs() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.unschedule_billing_jobs() TO service_role;

-- trim_cron_job_run_details: pg_cron's run log does not trim itself.
CREATE OR REPLACE FUNCTION public.trim_cron_job_run_details(older_than interval DEFAULT null)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_older_than constant interval := coalesce(
        trim_cron_job_run_details.older_than,
        make_interval(days => coalesce(billingdb._billing_setting('cron_history_retention_days'), '7')::integer)
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

-- billing_health: the seed's monitoring queries against its success metrics.
CREATE OR REPLACE FUNCTION public.billing_health()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_min_success constant numeric := coalesce(billingdb._billing_setting('health_min_webhook_success_pct'), '99');
    v_min_hit constant numeric := coalesce(billingdb._billing_setting('health_min_cache_hit_pct'), '80');
    v_min_reads constant numeric := coalesce(billingdb._billing_setting('health_min_cache_reads'), '100');
    v_max_stale constant numeric := coalesce(billingdb._billing_setting('health_max_cache_staleness_seconds'), '300');
    v_max_delay constant numeric := coalesce(billingdb._billing_setting('health_max_cleanup_delay_seconds'), '300');
    v_max_sync_age constant numeric := coalesce(
        billingdb._billing_setting('health_max_event_sync_age_seconds'), '86400'
    );
    v_sync billingdb.stripe_event_sync;
    v_cache jsonb;
    v_events record;
    v_ledger record;
    v_checks jsonb := '[]'::jsonb;
    v_value numeric;
    v_short_count bigint;
    v_short_credits bigint;
    v_short_detail text;
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
        (SELECT count(*) FROM billingdb.credit_balances AS b) AS users,
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

    -- 3b. Money went back but its credits were already spent (a refund or a dispute).
    SELECT count(*), coalesce(sum(f.credits), 0), string_agg(DISTINCT f.user_id || ' ' || f.invoice_id, ', ')
    INTO v_short_count, v_short_credits, v_short_detail
    FROM billingdb.credit_shortfalls AS f
    WHERE f.resolved_at IS NULL;
    v_checks := v_checks || jsonb_build_object(
        'name', 'clawback_shortfalls', 'value', v_short_count, 'threshold', 0, 'comparison', '=', 'unit', 'shortfalls',
        'status', CASE WHEN v_short_count = 0 THEN 'ok' ELSE 'breach' END,
        'detail', CASE
            WHEN v_short_count = 0 THEN 'no credits owed back'
            ELSE format('%s credits could not be taken back (user invoice: %s)', v_short_credits, v_short_detail)
        END
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
            WHEN v_value IS NULL AND v_cache #>> '{cleanup_job,last_start}' IS NULL THEN 'pending'
            WHEN v_value < v_max_delay THEN 'ok'
            ELSE 'breach'
        END,
        'detail', CASE
            WHEN v_cache -> 'cleanup_job' = 'null'::jsonb THEN 'subscription_cache_cleanup is not scheduled in pg_cron'
            WHEN v_value IS NULL AND v_cache #>> '{cleanup_job,last_start}' IS NULL
                THEN 'subscription_cache_cleanup is scheduled in pg_cron; its first run is pending'
            ELSE format('last run %s s ago, last pg_cron status %s',
                coalesce(v_value::text, 'never'), coalesce(v_cache #>> '{cleanup_job,last_status}', '-'))
        END
    );

    -- 7. The Events API sync (billingdb stripe sync-events), once it has run: it succeeded recently.
    SELECT s.* INTO v_sync FROM billingdb.stripe_event_sync AS s;
    v_value := round(extract(EPOCH FROM now() - v_sync.last_succeeded_at), 3);
    v_checks := v_checks || jsonb_build_object(
        'name', 'stripe_event_sync', 'value', v_value, 'threshold', v_max_sync_age, 'comparison', '<', 'unit', 's',
        'status', CASE
            WHEN v_sync.last_started_at IS null THEN 'no_data'
            WHEN v_value < v_max_sync_age THEN 'ok'
            ELSE 'breach'
        END,
        'detail', CASE
            WHEN v_sync.last_started_at IS null THEN 'billingdb stripe sync-events has not run'
            ELSE format('last success %s; last run %s', coalesce(v_value || ' s ago', 'never'),
                coalesce('failed: ' || v_sync.last_error, 'succeeded'))
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
'is a list of {name, status (ok | breach | no_data | pending: a scheduled job not run yet), value, threshold, comparison, unit, detail}: '
'webhook_success_rate (processed share of the stripe_events received in the last 24 h, > '
'health_min_webhook_success_pct = 99), credit_balance_integrity (share of users whose balance = sum(ledger), = 100), '
'negative_balances (= 0), clawback_shortfalls (unresolved credit_shortfalls, = 0), cache_staleness (age of the oldest valid cache row, < health_max_cache_staleness_seconds '
'= 300), cache_hit_rate (hits / reads since stats_since, > health_min_cache_hit_pct = 80, judged from '
'health_min_cache_reads = 100 reads), cache_cleanup (seconds since the last cleanup run, < '
'health_max_cleanup_delay_seconds = 300, judged only while pg_cron job subscription_cache_cleanup is active), stripe_event_sync (seconds since '
'billingdb stripe sync-events last succeeded, < health_max_event_sync_age_seconds = 86400, judged once a sync has run). '
'healthy is false exactly when a check is breach; breaches lists their names. cache = '
'get_subscription_cache_status(); events = counts received, processed and unprocessed in 24 h, unprocessed, failed '
'and pending overall, the oldest unprocessed; ledger = users, mismatched, negative and the findings of '
'reconcile_credits. Thresholds are billing_settings rows. Reads the whole ledger.';

REVOKE ALL ON FUNCTION public.billing_health() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.billing_health() TO service_role;

-- reconcile_credits: the seed's weekly reconciliation.
CREATE OR REPLACE FUNCTION public.reconcile_credits(since timestamptz DEFAULT null)
RETURNS TABLE (
    user_id text,
    allocated bigint,
    used bigint,
    refunded bigint,
    adjusted bigint,
    expired bigint,
    ledger_balance bigint,
    balance integer,
    last_balance_after integer,
    findings text[]
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_since constant timestamptz := coalesce(reconcile_credits.since, '-infinity'::timestamptz);
BEGIN
    RETURN QUERY
    WITH
    -- Every user's whole ledger (the integrity needs all of it) and the
    -- period's sums by type (signed as in the ledger: usage is negative).
    ledger AS (
        SELECT
            t.user_id,
            sum(t.amount) AS ledger_balance,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'allocation') AS allocated,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'usage') AS used,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'refund') AS refunded,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'adjustment') AS adjusted,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'expiration') AS expired,
            count(*) FILTER (WHERE t.created_at >= v_since) AS entries_since,
            (array_agg(t.balance_after ORDER BY t.id DESC))[1] AS last_balance_after
        FROM public.credit_transactions AS t
        GROUP BY t.user_id
    ),

    -- Ledger and balance rows side by side (a user may have only one of them).
    joined AS (
        SELECT
            coalesce(l.user_id, b.user_id) AS user_id,
            l.allocated,
            l.used,
            l.refunded,
            l.adjusted,
            l.expired,
            coalesce(l.ledger_balance, 0) AS ledger_balance,
            b.balance,
            l.last_balance_after,
            coalesce(l.entries_since, 0) AS entries_since
        FROM ledger AS l
        FULL JOIN billingdb.credit_balances AS b ON l.user_id = b.user_id
    ),

    -- Allocations larger than what their plan grants per period (say a
    -- payload's metadata.credits above the plan that was defined later).
    oversized AS (
        SELECT t.user_id
        FROM public.credit_transactions AS t
        INNER JOIN billingdb.plans AS p ON (t.metadata ->> 'price_id') = p.price_id
        WHERE t.transaction_type = 'allocation' AND t.amount > p.credits_per_period
        GROUP BY t.user_id
    ),

    -- Credits money going back should have taken back but could not (already spent).
    short AS (
        SELECT f.user_id
        FROM billingdb.credit_shortfalls AS f
        WHERE f.resolved_at IS NULL
        GROUP BY f.user_id
    ),

    -- What is wrong, by name.
    checked AS (
        SELECT
            j.*,
            array_remove(
                ARRAY[
                    CASE WHEN j.balance IS NULL THEN 'missing_balance_row' END,
                    CASE WHEN coalesce(j.balance, 0) <> j.ledger_balance THEN 'balance_mismatch' END,
                    CASE WHEN j.balance < 0 OR j.ledger_balance < 0 THEN 'negative_balance' END,
                    CASE
                        WHEN j.last_balance_after IS DISTINCT FROM j.balance AND j.last_balance_after IS NOT NULL
                            THEN 'balance_after_mismatch'
                    END,
                    CASE
                        WHEN EXISTS (SELECT FROM oversized AS o WHERE o.user_id = j.user_id)
                            THEN 'allocation_above_plan'
                    END,
                    CASE WHEN EXISTS (SELECT FROM short AS h WHERE h.user_id = j.user_id) THEN 'clawback_shortfall' END
                ],
                NULL
            ) AS findings
        FROM joined AS j
    )

    -- Users active since the cut-off, and every user with a finding.
    SELECT
        c.user_id,
        coalesce(c.allocated, 0)::bigint,
        coalesce(c.used, 0)::bigint,
        coalesce(c.refunded, 0)::bigint,
        coalesce(c.adjusted, 0)::bigint,
        coalesce(c.expired, 0)::bigint,
        c.ledger_balance::bigint,
        c.balance,
        c.last_balance_after,
        c.findings
    FROM checked AS c
    WHERE c.entries_since > 0 OR cardinality(c.findings) > 0
    ORDER BY cardinality(c.findings) = 0, c.user_id;
END
$function$;

COMMENT ON FUNCTION public.reconcile_credits(timestamptz) IS
'Contract: one row per user with ledger entries since `since` (null: all time), and per user with a finding at any '
'time: user_id; allocated, used, refunded, adjusted, expired = the sums of that type since `since`, signed as in '
'the ledger (used and expired negative); ledger_balance = sum(amount) of all the user''s entries; balance = the '
'credit_balances row (null when missing); last_balance_after = balance_after of the user''s last entry; findings = '
'the names of what is wrong: balance_mismatch (balance <> ledger_balance, a missing row counting 0), '
'missing_balance_row, negative_balance (balance or ledger_balance below 0), balance_after_mismatch (the last '
'entry''s balance_after <> balance), allocation_above_plan (an allocation of more credits than its price''s plan '
'grants per period, e.g. from a payload''s metadata.credits), clawback_shortfall (a refund or a dispute could not take '
'back credits already spent: see billingdb.credit_shortfalls). Rows with findings first. Reads the whole ledger.';

REVOKE ALL ON FUNCTION public.reconcile_credits(timestamptz) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.reconcile_credits(timestamptz) TO service_role;

-- Schedule billingdb's jobs in pg_cron. The checks run inside the database, so
-- the offline (`alembic upgrade head --sql`) script is the same everywhere:
-- where pg_cron is preloaded for this database (cron.database_name) but not
-- created yet and the role may create it (a superuser), it is created; where it
-- is installed and the role may use it, the jobs are scheduled; otherwise the
-- migration completes, schedules nothing and says what would fix it.
DO $schedule$
DECLARE
    -- From pg_settings: it hides a superuser-only setting from other roles
    -- (current_setting() would raise for them instead).
    v_cron_database constant text := (
        SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'cron.database_name'
    );
BEGIN
    IF
        NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron')
        AND v_cron_database = current_database()
        AND EXISTS (SELECT FROM pg_catalog.pg_available_extensions AS a WHERE a.name = 'pg_cron')
        AND (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
    THEN
        CREATE EXTENSION pg_cron;
        RAISE NOTICE 'billingdb: created the pg_cron extension in database %', current_database();
    END IF;

    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        RAISE NOTICE 'billingdb: pg_cron is not installed in database %, no job scheduled', current_database()
            USING HINT = CASE
                WHEN v_cron_database IS NULL THEN
                    'Run `billingdb maintenance run` every minute from cron or a Kubernetes CronJob, or preload '
                    'pg_cron (shared_preload_libraries), CREATE EXTENSION pg_cron in its database (as a '
                    'superuser) and run `billingdb maintenance schedule`.'
                WHEN v_cron_database = current_database() THEN
                    'As a superuser: CREATE EXTENSION pg_cron; then run `billingdb maintenance schedule`.'
                ELSE format(
                    'pg_cron runs jobs only in database %s (cron.database_name): migrate that database, or run '
                    '`billingdb maintenance run` every minute from cron or a Kubernetes CronJob.',
                    v_cron_database
                )
            END;
    ELSIF NOT has_schema_privilege('cron', 'USAGE') THEN
        RAISE NOTICE 'billingdb: role % may not use pg_cron (no USAGE on schema cron), no job scheduled', current_user
            USING HINT = format(
                'As a superuser: GRANT USAGE ON SCHEMA cron TO %I; then run `billingdb maintenance schedule`.',
                current_user
            );
    ELSE
        PERFORM public.schedule_billing_jobs();
    END IF;
END
$schedule$;

-- _row_counts: what a downgrade would drop, for the DBA's plan (`billingdb db
-- downgrade` calls it as the owner before anything runs).
CREATE OR REPLACE FUNCTION billingdb._row_counts(tables text[])
RETURNS TABLE (table_name text, row_count bigint)
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
DECLARE
    v_table text;
BEGIN
    -- Each named table that exists, in the order given, with its exact count.
    FOREACH v_table IN ARRAY _row_counts.tables LOOP
        IF to_regclass(v_table) IS NOT NULL THEN
            _row_counts.table_name := v_table;
            EXECUTE format('SELECT count(*) FROM %s', to_regclass(v_table)) INTO _row_counts.row_count;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$function$;

COMMENT ON FUNCTION billingdb._row_counts(text[]) IS
'Internal, for the owner. Contract: one row (table_name, row_count) per schema-qualified table name in tables that '
'exists, in the given order, with its exact row count; names that are not tables are skipped.';

REVOKE ALL ON FUNCTION billingdb._row_counts(text[]) FROM public, anon, authenticated;
