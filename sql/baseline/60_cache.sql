-- The subscription state cache: get_user_subscription_state() answers from a
-- row with a time to live (cache_ttl_seconds, 300 by default); every function
-- that changes a user's state refreshes or drops that user's row in the same
-- transaction. Hits and misses are counted; expired rows are cleaned up by a
-- job that records each run.

-- The cache of get_user_subscription_state().
CREATE TABLE public.subscription_cache (
    user_id text PRIMARY KEY,
    stripe_customer_id text,
    subscription_id text,
    status text,
    price_id text,
    plan_name text,
    credits_balance integer,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    can_use_credits boolean NOT NULL DEFAULT false,
    state jsonb NOT NULL DEFAULT '{}'::jsonb,
    cached_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CHECK (expires_at >= cached_at)
);

CREATE INDEX idx_subscription_cache_expires_at
ON public.subscription_cache (expires_at);

COMMENT ON TABLE public.subscription_cache IS
'Per-user subscription state with a time to live; refreshed by every write of that user.';

-- Cache hit and miss counters: nextval() is lock-free and not transactional,
-- so counting does not slow or serialise the read path. UNLOGGED (PostgreSQL
-- 15+): a logged sequence writes WAL every 32 calls, which turns a read-only
-- cache hit into a transaction that waits for a WAL flush at commit; the price
-- is that the counters restart after a crash. (sqlfluff cannot parse UNLOGGED
-- SEQUENCE yet, hence the noqa.)
CREATE UNLOGGED SEQUENCE billingdb.subscription_cache_hits AS bigint MINVALUE 0 START WITH 1 CACHE 1; -- noqa: PRS
CREATE UNLOGGED SEQUENCE billingdb.subscription_cache_misses AS bigint MINVALUE 0 START WITH 1 CACHE 1; -- noqa: PRS

COMMENT ON SEQUENCE billingdb.subscription_cache_hits IS
'Counts get_user_subscription_state() cache hits since cache_stats_reset_at.';
COMMENT ON SEQUENCE billingdb.subscription_cache_misses IS
'Counts get_user_subscription_state() cache misses since cache_stats_reset_at.';

-- One row per run of clear_expired_subscription_cache(): when, how many, how long.
CREATE TABLE billingdb.cache_cleanup_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    rows_deleted integer NOT NULL CHECK (rows_deleted >= 0),
    duration_ms numeric(12, 3) NOT NULL CHECK (duration_ms >= 0)
);

CREATE INDEX idx_cache_cleanup_runs_started_at
ON billingdb.cache_cleanup_runs (started_at);

COMMENT ON TABLE billingdb.cache_cleanup_runs IS
'One row per clear_expired_subscription_cache() run (started_at, rows_deleted, duration_ms); rows older than '
'7 days are deleted by the cleanup itself. Read with get_cache_cleanup_history(n).';

-- Private: row level security with no policy (only the owner, through the
-- entry points, reads or writes), and no privilege for any other role.
ALTER TABLE billingdb.cache_cleanup_runs ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON TABLE billingdb.cache_cleanup_runs FROM public, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE billingdb.subscription_cache_hits, billingdb.subscription_cache_misses
FROM public, anon, authenticated, service_role;

-- The cache is part of the interface: service_role reads it (the runbook's
-- queries); only the entry points write it (a row written directly would
-- make the state API report whatever it says).
ALTER TABLE public.subscription_cache ENABLE ROW LEVEL SECURITY;

CREATE POLICY service_role_read ON public.subscription_cache
FOR SELECT TO service_role USING (true);

REVOKE ALL ON TABLE public.subscription_cache FROM public, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.subscription_cache TO service_role;

CREATE OR REPLACE FUNCTION billingdb._compute_subscription_state(user_id text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
DECLARE
    v_user_id constant text := _compute_subscription_state.user_id;
    v_sub record;
    v_balance integer;
    v_customer_id text;
BEGIN
    -- The user's current subscription: first one that may spend now, then one
    -- that is not terminal, then the latest period end, the latest update.
    SELECT
        s.subscription_id,
        s.stripe_customer_id,
        s.status,
        s.price_id,
        s.current_period_end,
        s.cancel_at_period_end,
        p.name AS plan_name,
        r.refusal
    INTO v_sub
    FROM billingdb.subscriptions AS s
    LEFT JOIN billingdb.plans AS p ON p.price_id = s.price_id
    CROSS JOIN LATERAL (
        SELECT billingdb._spending_refusal(s.status, s.cancel_at_period_end, s.current_period_end) AS refusal
    ) AS r
    WHERE s.user_id = v_user_id
    ORDER BY
        (r.refusal IS NULL) DESC,
        (s.status NOT IN ('canceled', 'incomplete_expired')) DESC,
        s.current_period_end DESC NULLS LAST,
        s.updated_at DESC,
        s.subscription_id ASC
    LIMIT 1;

    -- The balance (0 without a balance row).
    SELECT b.balance INTO v_balance FROM billingdb.credit_balances AS b WHERE b.user_id = v_user_id;

    -- The Stripe customer: the subscription's, else the user's mapping.
    v_customer_id := v_sub.stripe_customer_id;
    IF v_customer_id IS NULL THEN
        SELECT c.stripe_customer_id INTO v_customer_id
        FROM billingdb.stripe_customers AS c
        WHERE c.user_id = v_user_id;
    END IF;

    RETURN jsonb_build_object(
        'user_id', v_user_id,
        'subscription_id', v_sub.subscription_id,
        'stripe_customer_id', v_customer_id,
        'status', v_sub.status,
        'plan', v_sub.plan_name,
        'price_id', v_sub.price_id,
        'credits_balance', coalesce(v_balance, 0),
        'current_period_end', v_sub.current_period_end,
        'cancel_at_period_end', coalesce(v_sub.cancel_at_period_end, false),
        'can_use_credits', v_sub.subscription_id IS NOT NULL AND v_sub.refusal IS NULL,
        'reason', CASE WHEN v_sub.subscription_id IS NULL THEN 'no_subscription' ELSE v_sub.refusal END
    );
END
$function$;

COMMENT ON FUNCTION billingdb._compute_subscription_state(text) IS
'Internal. Contract: the live subscription state of user_id as jsonb {user_id, subscription_id, stripe_customer_id, '
'status, plan, price_id, credits_balance, current_period_end, cancel_at_period_end, can_use_credits, reason}, '
'without the cache keys. The current subscription is the best of the user''s: one that may spend now '
'(_spending_refusal is null) first, then one not canceled/incomplete_expired, then the latest current_period_end, the '
'latest updated_at, the smallest subscription_id. No subscription: status, plan, price_id null, can_use_credits '
'false, reason no_subscription; credits_balance is 0 without a balance row.';

REVOKE ALL ON FUNCTION billingdb._compute_subscription_state(text) FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION billingdb._store_subscription_cache(user_id text, state jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_user_id constant text := _store_subscription_cache.user_id;
    v_state constant jsonb := _store_subscription_cache.state;
    v_ttl constant integer := coalesce(billingdb._billing_setting('cache_ttl_seconds'), '300')::integer;
    v_period_end constant timestamptz := (v_state ->> 'current_period_end')::timestamptz;
    v_expires_at timestamptz := now() + make_interval(secs => v_ttl);
BEGIN
    -- A state that may spend only until the period end must not outlive it.
    IF (v_state ->> 'can_use_credits')::boolean
        AND (v_state ->> 'status' = 'canceled' OR (v_state ->> 'cancel_at_period_end')::boolean)
        AND v_period_end > now() THEN
        v_expires_at := least(v_expires_at, v_period_end);
    END IF;

    -- Upsert the user's row: the columns the runbook reads, and the state.
    INSERT INTO public.subscription_cache AS c (
        user_id, stripe_customer_id, subscription_id, status, price_id, plan_name,
        credits_balance, current_period_end, cancel_at_period_end, can_use_credits,
        state, cached_at, expires_at
    )
    VALUES (
        v_user_id,
        v_state ->> 'stripe_customer_id',
        v_state ->> 'subscription_id',
        v_state ->> 'status',
        v_state ->> 'price_id',
        v_state ->> 'plan',
        (v_state ->> 'credits_balance')::integer,
        v_period_end,
        coalesce((v_state ->> 'cancel_at_period_end')::boolean, false),
        coalesce((v_state ->> 'can_use_credits')::boolean, false),
        v_state,
        now(),
        v_expires_at
    )
    ON CONFLICT ON CONSTRAINT subscription_cache_pkey DO UPDATE
    SET
        stripe_customer_id = excluded.stripe_customer_id,
        subscription_id = excluded.subscription_id,
        status = excluded.status,
        price_id = excluded.price_id,
        plan_name = excluded.plan_name,
        credits_balance = excluded.credits_balance,
        current_period_end = excluded.current_period_end,
        cancel_at_period_end = excluded.cancel_at_period_end,
        can_use_credits = excluded.can_use_credits,
        state = excluded.state,
        cached_at = excluded.cached_at,
        expires_at = excluded.expires_at;

    RETURN v_state || jsonb_build_object(
        'cached', false, 'cached_at', now(), 'expires_at', v_expires_at
    );
END
$function$;

COMMENT ON FUNCTION billingdb._store_subscription_cache(text, jsonb) IS
'Internal. Contract: upserts user_id''s subscription_cache row from a state computed by _compute_subscription_state '
'(cached_at = now(), expires_at = now() + cache_ttl_seconds, but not after current_period_end when the state may '
'spend only until then) and returns the state with cached false, cached_at and expires_at. The caller holds the '
'user''s lock (_lock_user, or _try_lock_user on a cache miss) and computed the state after taking it.';

REVOKE ALL ON FUNCTION billingdb._store_subscription_cache(text, jsonb) FROM public, anon, authenticated;

-- get_user_subscription_state: the cached read path.
CREATE OR REPLACE FUNCTION public.get_user_subscription_state(user_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_user_id constant text := get_user_subscription_state.user_id;
    v_hit record;
    v_state jsonb;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    IF length(get_user_subscription_state.user_id) > 255 THEN
        PERFORM billingdb._check_text('get_user_subscription_state', 'user_id', get_user_subscription_state.user_id, 255);
    END IF;

    -- A user id is required.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'get_user_subscription_state: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;

    -- Hit: a valid cache row; count it (nextval: lock-free, not transactional).
    SELECT c.state, c.cached_at, c.expires_at INTO v_hit
    FROM public.subscription_cache AS c
    WHERE c.user_id = v_user_id AND c.expires_at > now();
    IF FOUND THEN
        PERFORM nextval('billingdb.subscription_cache_hits'::regclass);
        RETURN v_hit.state || jsonb_build_object(
            'cached', true, 'cached_at', v_hit.cached_at, 'expires_at', v_hit.expires_at
        );
    END IF;

    -- Miss: count it, then compute and store, but only while no write of this
    -- user is in flight (the user's exclusive lock, tried without waiting, before
    -- computing; a shared lock would deadlock a read-then-spend transaction
    -- against its concurrent twin); otherwise that write refreshes the row
    -- itself and we return the computed state unstored.
    PERFORM nextval('billingdb.subscription_cache_misses'::regclass);
    IF billingdb._try_lock_user(v_user_id) THEN
        RETURN billingdb._store_subscription_cache(v_user_id, billingdb._compute_subscription_state(v_user_id));
    END IF;
    v_state := billingdb._compute_subscription_state(v_user_id);
    RETURN v_state || jsonb_build_object('cached', false, 'cached_at', NULL, 'expires_at', NULL);
END
$function$;

COMMENT ON FUNCTION public.get_user_subscription_state(text) IS
'Contract: the subscription state of user_id as jsonb {user_id, subscription_id, stripe_customer_id, status, plan, '
'price_id, credits_balance, current_period_end, cancel_at_period_end, can_use_credits, reason, cached, cached_at, '
'expires_at}. reason is null when can_use_credits, else no_subscription | subscription_inactive | period_ended; '
'can_use_credits is about the subscription, not the balance. An unknown user gets a well-formed state: status, '
'plan, price_id null, credits_balance 0 (or the balance of granted credits), can_use_credits false, reason '
'no_subscription. Hit (subscription_cache row with expires_at > now()): that row''s state, cached true, counted in '
'sequence subscription_cache_hits. Miss: computed live (the current subscription is chosen as in '
'_compute_subscription_state), stored with expires_at = now() + cache_ttl_seconds (not after current_period_end '
'while the state may spend only until then), cached false, counted in subscription_cache_misses; while a write of '
'the user is in flight the state is returned unstored (cached_at and expires_at null). Every write of a user '
'refreshes the row in its transaction, so a hit is never older than the last committed change (exception: a '
'set_plan rename racing a miss may show the old plan name until the row expires). Errors: 22023 when user_id is '
'null or blank.';

REVOKE ALL ON FUNCTION public.get_user_subscription_state(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_user_subscription_state(text) TO service_role;

CREATE OR REPLACE FUNCTION public.update_subscription_cache(user_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_user_id constant text := update_subscription_cache.user_id;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_text('update_subscription_cache', 'user_id', update_subscription_cache.user_id, 255);

    -- A user id is required.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'update_subscription_cache: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;

    -- Wait for any write of this user to commit, then compute and store.
    PERFORM billingdb._lock_user(v_user_id);
    RETURN billingdb._store_subscription_cache(v_user_id, billingdb._compute_subscription_state(v_user_id));
END
$function$;

COMMENT ON FUNCTION public.update_subscription_cache(text) IS
'Contract: recomputes user_id''s subscription state and stores it in subscription_cache (expires_at = now() + '
'cache_ttl_seconds, capped at current_period_end while the state may spend only until then); returns the state '
'as get_user_subscription_state does, with cached false. Does not count a hit or a miss. Takes the user''s lock '
'(_lock_user), so it waits for an in-flight write of the user. The state-changing functions refresh the row '
'themselves in their transaction. Errors: 22023 when user_id is null or blank.';

REVOKE ALL ON FUNCTION public.update_subscription_cache(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.update_subscription_cache(text) TO service_role;

-- clear_expired_subscription_cache: deletes expired rows and records each run.
CREATE OR REPLACE FUNCTION public.clear_expired_subscription_cache()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
    INSERT INTO billingdb.cache_cleanup_runs (started_at, rows_deleted, duration_ms)
    VALUES (
        v_started,
        v_deleted,
        round((extract(EPOCH FROM clock_timestamp() - v_started) * 1000)::numeric, 3)
    );

    -- Keep a week of history (10080 rows at one run a minute).
    DELETE FROM billingdb.cache_cleanup_runs AS r WHERE r.started_at < now() - interval '7 days';

    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION public.clear_expired_subscription_cache() IS
'Contract: deletes the subscription_cache rows with expires_at <= now() and returns how many; the hit/miss counters '
'are kept. Each call records a row in cache_cleanup_runs (started_at, rows_deleted, duration_ms) and deletes the '
'runs older than 7 days. Safe to run at any time; pg_cron job subscription_cache_cleanup runs it every minute.';

REVOKE ALL ON FUNCTION public.clear_expired_subscription_cache() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.clear_expired_subscription_cache() TO service_role;

CREATE OR REPLACE FUNCTION public.clear_all_subscription_cache()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_deleted integer;
BEGIN
    -- Every row: the next read of each user is a miss that recomputes.
    DELETE FROM public.subscription_cache AS c WHERE true;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    -- Restart the hit/miss counters and record since when they count.
    PERFORM setval('billingdb.subscription_cache_hits'::regclass, 1, false);
    PERFORM setval('billingdb.subscription_cache_misses'::regclass, 1, false);
    INSERT INTO billingdb.billing_settings AS s (name, value, description)
    VALUES (
        'cache_stats_reset_at', now()::text,
        'Since when the cache hit/miss counters count (set by clear_all_subscription_cache).'
    )
    ON CONFLICT ON CONSTRAINT billing_settings_pkey DO UPDATE SET value = excluded.value;

    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION public.clear_all_subscription_cache() IS
'Contract: deletes every subscription_cache row and returns how many; resets the hit and miss counters to 0 and '
'sets the setting cache_stats_reset_at to now(). The counter reset (setval) is not undone if the caller''s '
'transaction rolls back.';

REVOKE ALL ON FUNCTION public.clear_all_subscription_cache() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.clear_all_subscription_cache() TO service_role;

-- get_subscription_cache_status: the cache's size, hit rate, last cleanup and cleanup job.
CREATE OR REPLACE FUNCTION public.get_subscription_cache_status()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END INTO v_hits FROM billingdb.subscription_cache_hits AS q;
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END INTO v_misses
    FROM billingdb.subscription_cache_misses AS q;

    -- The last cleanup run, if any.
    SELECT r.started_at, r.rows_deleted, r.duration_ms INTO v_last
    FROM billingdb.cache_cleanup_runs AS r
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
        'stats_since', billingdb._billing_setting('cache_stats_reset_at')::timestamptz,
        'average_age_seconds', v_rows.average_age_seconds,
        'max_valid_age_seconds', v_rows.max_valid_age_seconds,
        'ttl_seconds', coalesce(billingdb._billing_setting('cache_ttl_seconds'), '300')::integer,
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

CREATE OR REPLACE FUNCTION public.get_cache_cleanup_history(n integer DEFAULT 10)
RETURNS TABLE (started_at timestamptz, rows_deleted integer, duration_ms numeric)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_n constant integer := get_cache_cleanup_history.n;
BEGIN
    -- A positive count is required.
    IF v_n IS NULL OR v_n < 1 THEN
        RAISE EXCEPTION 'get_cache_cleanup_history: n must be a positive integer (n=%)', coalesce(v_n::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Ask for the last n runs, e.g. get_cache_cleanup_history(10).';
    END IF;

    -- The last n runs, newest first.
    RETURN QUERY
    SELECT r.started_at, r.rows_deleted, r.duration_ms
    FROM billingdb.cache_cleanup_runs AS r
    ORDER BY r.started_at DESC, r.id DESC
    LIMIT v_n;
END
$function$;

COMMENT ON FUNCTION public.get_cache_cleanup_history(integer) IS
'Contract: the last n runs of clear_expired_subscription_cache (default 10), newest first, as rows (started_at, '
'rows_deleted, duration_ms); the history keeps 7 days. Use as SELECT * FROM public.get_cache_cleanup_history(10). '
'Errors: 22023 when n is null or below 1.';

REVOKE ALL ON FUNCTION public.get_cache_cleanup_history(integer) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_cache_cleanup_history(integer) TO service_role;
