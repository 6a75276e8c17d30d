-- Baseline down: remove every billingdb object: pg_cron's jobs (where pg_cron
-- is installed in this database), the functions (some take or return a
-- table's row type), the tables and sequences, then the functions the tables'
-- CHECKs and triggers call. The roles anon, authenticated and service_role
-- are cluster-wide and may be shared (Supabase owns them), so they stay; with
-- the objects gone they hold no billingdb grant.

DO $unschedule$
BEGIN
    IF
        EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron')
        AND has_schema_privilege('cron', 'USAGE')
    THEN
        PERFORM public.unschedule_billing_jobs();
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        RAISE NOTICE 'billingdb: role % may not use pg_cron, its jobs (if any) stay scheduled', current_user
            USING HINT = 'As a superuser: SELECT cron.unschedule(name) for subscription_cache_cleanup, '
            'stripe_events_purge, cron_job_run_details_trim and credit_holds_release.';
    ELSE
        RAISE NOTICE 'billingdb: pg_cron is not installed in database %, no job to unschedule', current_database();
    END IF;
END
$unschedule$;

-- The functions, in the reverse order of their creation.
DROP FUNCTION IF EXISTS billingdb._apply_stripe_charge_event(jsonb);
DROP FUNCTION IF EXISTS billingdb._reinstate_credits(bigint, text);
DROP FUNCTION IF EXISTS billingdb._claw_back_credits(bigint, text, text, integer);
DROP FUNCTION IF EXISTS billingdb._row_counts(text[]);
DROP FUNCTION IF EXISTS public.set_billing_setting(text, text);
DROP FUNCTION IF EXISTS public.reconcile_credits(timestamp with time zone);
DROP FUNCTION IF EXISTS public.billing_health();
DROP FUNCTION IF EXISTS public.trim_cron_job_run_details(interval);
DROP FUNCTION IF EXISTS public.unschedule_billing_jobs();
DROP FUNCTION IF EXISTS public.schedule_billing_jobs();
DROP FUNCTION IF EXISTS public.billing_cron_jobs();
DROP FUNCTION IF EXISTS public.finish_stripe_event_sync(timestamp with time zone, jsonb, text);
DROP FUNCTION IF EXISTS public.begin_stripe_event_sync();
DROP FUNCTION IF EXISTS billingdb._stripe_event_sync_running_here();
DROP FUNCTION IF EXISTS public.process_stripe_events(jsonb, boolean);
DROP FUNCTION IF EXISTS public.purge_stripe_events_batch(interval, integer);
DROP FUNCTION IF EXISTS billingdb._apply_pending_stripe_events(text);
DROP FUNCTION IF EXISTS public.retry_stripe_event(text);
DROP FUNCTION IF EXISTS public.process_stripe_event(jsonb);
DROP FUNCTION IF EXISTS billingdb._attempt_stripe_event(bigint);
DROP FUNCTION IF EXISTS billingdb._dispatch_stripe_event(jsonb, jsonb);
DROP FUNCTION IF EXISTS billingdb._apply_stripe_invoice_failed(jsonb, jsonb);
DROP FUNCTION IF EXISTS billingdb._apply_stripe_invoice_paid(jsonb, jsonb);
DROP FUNCTION IF EXISTS public.sync_stripe_invoice(jsonb, timestamp with time zone, boolean);
DROP FUNCTION IF EXISTS public.sync_stripe_subscription(jsonb, timestamp with time zone, boolean);
DROP FUNCTION IF EXISTS billingdb._check_sync_arguments(text, timestamp with time zone, boolean);
DROP FUNCTION IF EXISTS billingdb._stripe_subscription_state(jsonb);
DROP FUNCTION IF EXISTS billingdb._stripe_time(jsonb, text);
DROP FUNCTION IF EXISTS billingdb._apply_stripe_subscription_event(jsonb);
DROP FUNCTION IF EXISTS billingdb._apply_stripe_checkout_completed(jsonb);
DROP FUNCTION IF EXISTS billingdb._stripe_invoice_credits(jsonb);
DROP FUNCTION IF EXISTS billingdb._lock_stripe_event(text);
DROP FUNCTION IF EXISTS billingdb._stripe_event_refs(jsonb);
DROP FUNCTION IF EXISTS billingdb._stripe_id(jsonb);
DROP FUNCTION IF EXISTS public.get_cache_cleanup_history(integer);
DROP FUNCTION IF EXISTS public.get_subscription_cache_status();
DROP FUNCTION IF EXISTS public.clear_all_subscription_cache();
DROP FUNCTION IF EXISTS public.clear_expired_subscription_cache();
DROP FUNCTION IF EXISTS public.update_subscription_cache(text);
DROP FUNCTION IF EXISTS public.get_user_subscription_state(text);
DROP FUNCTION IF EXISTS billingdb._store_subscription_cache(text, jsonb);
DROP FUNCTION IF EXISTS billingdb._compute_subscription_state(text);
DROP FUNCTION IF EXISTS public.release_expired_credit_holds(integer);
DROP FUNCTION IF EXISTS public.release_credit_hold(bigint, text);
DROP FUNCTION IF EXISTS public.commit_credit_hold(bigint, jsonb);
DROP FUNCTION IF EXISTS public.reserve_credits(text, integer, interval, text, text, jsonb);
DROP FUNCTION IF EXISTS billingdb._release_credit_hold(bigint, text, text);
DROP FUNCTION IF EXISTS billingdb._credit_hold_json(billingdb.credit_holds);
DROP FUNCTION IF EXISTS public.add_subscription_credits(text, text, text, integer, text, jsonb);
DROP FUNCTION IF EXISTS public.refund_credits(bigint, text);
DROP FUNCTION IF EXISTS public.grant_credits(text, integer, text, text);
DROP FUNCTION IF EXISTS public.use_credits_validated(text, integer, text, jsonb, text);
DROP FUNCTION IF EXISTS billingdb._store_cached_balance(text, integer);
DROP FUNCTION IF EXISTS billingdb._append_credit_transaction(text, integer, text, text, jsonb, text, text, bigint);
DROP FUNCTION IF EXISTS billingdb._try_lock_user(text);
DROP FUNCTION IF EXISTS billingdb._lock_user(text);
DROP FUNCTION IF EXISTS public.apply_subscription_change(text, text, text, text, text, timestamp with time zone, timestamp with time zone, boolean, timestamp with time zone, timestamp with time zone, text);
DROP FUNCTION IF EXISTS billingdb._refusal_message(jsonb);
DROP FUNCTION IF EXISTS billingdb._spending_refusal(text, boolean, timestamp with time zone);
DROP FUNCTION IF EXISTS public.get_plan(text);
DROP FUNCTION IF EXISTS public.set_plan(text, text, integer, boolean, integer, text, text, boolean, text);
DROP FUNCTION IF EXISTS public.link_stripe_customer(text, text);
DROP FUNCTION IF EXISTS billingdb._stripe_user_id(jsonb, text);
DROP FUNCTION IF EXISTS public.get_or_create_stripe_customer(text, text);
DROP FUNCTION IF EXISTS billingdb._lock_stripe_customer(text);
DROP FUNCTION IF EXISTS billingdb._billing_setting(text);

-- The tables (their triggers, constraints and policies go with them).
DROP TABLE IF EXISTS
billingdb.credit_holds,
public.credit_transactions,
billingdb.credit_shortfalls,
billingdb.credit_balances,
public.subscription_cache,
billingdb.cache_cleanup_runs,
public.stripe_events,
billingdb.stripe_event_sync,
billingdb.stripe_customers,
billingdb.subscriptions,
billingdb.subscription_status_transitions,
billingdb.plans,
billingdb.activity_log,
billingdb.billing_settings;

DROP SEQUENCE IF EXISTS billingdb.subscription_cache_hits, billingdb.subscription_cache_misses;

-- What the tables' CHECKs and triggers called, and the input checks.
DROP FUNCTION IF EXISTS billingdb._check_metadata(text, text, jsonb);
DROP FUNCTION IF EXISTS billingdb._check_stripe_id(text, text, text, text);
DROP FUNCTION IF EXISTS billingdb._check_text(text, text, text, integer);
DROP FUNCTION IF EXISTS billingdb._stripe_customers_apply_pending();
DROP FUNCTION IF EXISTS billingdb._valid_stripe_event(text, text, integer);
DROP FUNCTION IF EXISTS billingdb._valid_credit_hold(text, integer, text, text, jsonb, jsonb, timestamp with time zone, timestamp with time zone, timestamp with time zone, bigint, bigint);
DROP FUNCTION IF EXISTS billingdb._credit_transactions_append_only();
DROP FUNCTION IF EXISTS billingdb._valid_credit_transaction(text, integer, integer, bigint, jsonb, text);
DROP FUNCTION IF EXISTS billingdb._valid_subscription(text, text, text, text, timestamp with time zone, timestamp with time zone);

-- The private schema, empty now (without CASCADE: an object someone else put
-- there stops the downgrade instead of being dropped unseen).
DROP SCHEMA IF EXISTS billingdb;
