-- Revision 0002 down: remove every object 0002 created, functions first (some
-- return a table's row type), then the tables and the sequences. The rows of
-- subscription_cache (0001's table) that 0002's functions wrote are dropped:
-- they hold states 0001 cannot produce.

DROP FUNCTION IF EXISTS public.set_plan(text, text, integer, boolean, integer, text, text, boolean);
DROP FUNCTION IF EXISTS public.get_subscription_cache_status();
DROP FUNCTION IF EXISTS public.clear_all_subscription_cache();
DROP FUNCTION IF EXISTS public.clear_expired_subscription_cache();
DROP FUNCTION IF EXISTS public.apply_subscription_change(
    text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, text
);
DROP FUNCTION IF EXISTS public.grant_credits(text, integer, text, text);
DROP FUNCTION IF EXISTS public.refund_credits(bigint, text);
DROP FUNCTION IF EXISTS public.add_subscription_credits(text, text, text, integer, text);
DROP FUNCTION IF EXISTS public.use_credits_validated(text, integer, text, jsonb, text);
DROP FUNCTION IF EXISTS public.update_subscription_cache(text);
DROP FUNCTION IF EXISTS public.get_user_subscription_state(text);
DROP FUNCTION IF EXISTS public._append_credit_transaction(text, integer, text, text, jsonb, text, bigint);
DROP FUNCTION IF EXISTS public._store_subscription_cache(text, jsonb);
DROP FUNCTION IF EXISTS public._compute_subscription_state(text);
DROP FUNCTION IF EXISTS public._spending_refusal(text, boolean, timestamptz);
DROP FUNCTION IF EXISTS public._try_lock_user(text);
DROP FUNCTION IF EXISTS public._lock_user(text);
DROP FUNCTION IF EXISTS public._billing_setting(text);

DELETE FROM public.subscription_cache
WHERE true;

DROP SEQUENCE IF EXISTS public.subscription_cache_misses;
DROP SEQUENCE IF EXISTS public.subscription_cache_hits;

DROP TABLE IF EXISTS public.billing_settings;
DROP TABLE IF EXISTS public.activity_log;
DROP TABLE IF EXISTS public.credit_transactions;
DROP TABLE IF EXISTS public.credit_balances;
DROP TABLE IF EXISTS public.subscription_status_transitions;
DROP TABLE IF EXISTS public.subscriptions;
DROP TABLE IF EXISTS public.plans;

-- The ledger's trigger function goes with its table's triggers.
DROP FUNCTION IF EXISTS public._credit_transactions_append_only();
