-- Revision 0002: the subscription state machine, the credit ledger and the state cache.
--
-- Why: the seed's subscription-state-machine.sql needs a data model under it.
-- This revision creates the plans (Stripe price -> credits per period), the
-- subscriptions (one row per Stripe subscription, with the watermark of the
-- last applied event), the allowed status transitions as data, the per-user
-- balance and the append-only ledger, the activity log, the billing settings
-- (cache TTL, past_due grace) and the two sequences that count cache hits and
-- misses. The functions come from sql/functions/*/v1.sql (see the revision).
--
-- Every table: row level security, a service_role policy, nothing for PUBLIC,
-- anon or authenticated.

-- Stripe prices we sell and the credits each grants per billing period.
CREATE TABLE public.plans (
    price_id text PRIMARY KEY CHECK (btrim(price_id) <> ''),
    name text NOT NULL CHECK (btrim(name) <> ''),
    credits_per_period integer NOT NULL CHECK (credits_per_period > 0),
    amount_cents integer CHECK (amount_cents >= 0),
    currency text CHECK (currency ~ '^[a-z]{3}$'),
    billing_interval text CHECK (billing_interval IN ('day', 'week', 'month', 'year')),
    reset_each_period boolean NOT NULL DEFAULT false,
    active boolean NOT NULL DEFAULT true,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE public.plans IS
'Stripe price id -> plan name and credits granted per paid period; reset_each_period: unused credits of the '
'ended period expire when the next invoice allocates (see add_subscription_credits). Written by set_plan().';

-- One row per Stripe subscription, written only by apply_subscription_change().
CREATE TABLE public.subscriptions (
    subscription_id text PRIMARY KEY CHECK (subscription_id ~ '^sub_'),
    user_id text NOT NULL CHECK (btrim(user_id) <> ''),
    stripe_customer_id text CHECK (stripe_customer_id ~ '^cus_'),
    status text NOT NULL CHECK (
        status IN (
            'incomplete', 'incomplete_expired', 'trialing', 'active',
            'past_due', 'unpaid', 'canceled', 'paused'
        )
    ),
    price_id text,
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    canceled_at timestamptz,
    last_event_created timestamptz,
    last_event_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (current_period_end >= current_period_start)
);

CREATE INDEX idx_subscriptions_user_id ON public.subscriptions (user_id);

COMMENT ON TABLE public.subscriptions IS
'One row per Stripe subscription (status, price, period, cancellation). last_event_created + last_event_id are '
'the watermark of the last applied Stripe event. Only apply_subscription_change() writes it.';

-- The state machine as data: every allowed change of status (from <> to).
-- A same-status update (active -> active with a new period) is always allowed
-- and is not a row here. canceled and incomplete_expired are terminal: no row
-- leaves them. Source: Stripe's Subscription.status documentation.
CREATE TABLE public.subscription_status_transitions (
    from_status text NOT NULL,
    to_status text NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CHECK (from_status <> to_status),
    CHECK (
        from_status IN (
            'incomplete', 'incomplete_expired', 'trialing', 'active',
            'past_due', 'unpaid', 'canceled', 'paused'
        )
    ),
    CHECK (
        to_status IN (
            'incomplete', 'incomplete_expired', 'trialing', 'active',
            'past_due', 'unpaid', 'canceled', 'paused'
        )
    )
);

COMMENT ON TABLE public.subscription_status_transitions IS
'Allowed subscription status changes (from_status <> to_status); same-status updates are always allowed and are '
'not listed; canceled and incomplete_expired are terminal. apply_subscription_change() refuses any other change.';

INSERT INTO public.subscription_status_transitions (from_status, to_status) VALUES
-- First invoice paid; not paid within 23 hours; canceled before payment.
('incomplete', 'active'),
('incomplete', 'incomplete_expired'),
('incomplete', 'canceled'),
-- Trial ends paid, unpaid, canceled, or without a payment method (pause).
('trialing', 'active'),
('trialing', 'past_due'),
('trialing', 'canceled'),
('trialing', 'paused'),
-- Renewal fails; retries exhausted (past_due may be skipped when its event
-- arrives late and is stale); canceled; paused (Pause API); a new trial_end.
('active', 'past_due'),
('active', 'unpaid'),
('active', 'canceled'),
('active', 'paused'),
('active', 'trialing'),
-- Paid at last; retries exhausted: canceled or unpaid per the account setting.
('past_due', 'active'),
('past_due', 'unpaid'),
('past_due', 'canceled'),
-- The open invoice paid; or given up.
('unpaid', 'active'),
('unpaid', 'canceled'),
-- Resumed after a payment method was added; or given up.
('paused', 'active'),
('paused', 'canceled');

-- One balance per user, updated in the same transaction as each ledger entry.
CREATE TABLE public.credit_balances (
    user_id text PRIMARY KEY CHECK (btrim(user_id) <> ''),
    balance integer NOT NULL DEFAULT 0 CHECK (balance >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE public.credit_balances IS
'Current credit balance per user; always equals sum(credit_transactions.amount) of that user and is never negative.';

-- The ledger: append-only, signed amounts, the balance after each entry.
CREATE TABLE public.credit_transactions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL CHECK (btrim(user_id) <> ''),
    amount integer NOT NULL CHECK (amount <> 0),
    transaction_type text NOT NULL CHECK (
        transaction_type IN ('allocation', 'usage', 'refund', 'adjustment', 'expiration')
    ),
    description text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    idempotency_key text CONSTRAINT credit_transactions_idempotency_key_key UNIQUE,
    balance_after integer NOT NULL CHECK (balance_after >= 0),
    refund_of bigint REFERENCES public.credit_transactions (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The table repeats the functions' rules: the sign of each type, refunds
    -- point at what they refund.
    CHECK (transaction_type NOT IN ('allocation', 'refund') OR amount > 0),
    CHECK (transaction_type NOT IN ('usage', 'expiration') OR amount < 0),
    CHECK ((transaction_type = 'refund') = (refund_of IS NOT null))
);

-- A usage is refunded at most once.
CREATE UNIQUE INDEX idx_credit_transactions_refund_of
ON public.credit_transactions (refund_of) WHERE refund_of IS NOT null;

CREATE INDEX idx_credit_transactions_user_created
ON public.credit_transactions (user_id, created_at);

-- The runbook looks allocations up by invoice: WHERE metadata->>'invoice_id' = 'in_...'.
CREATE INDEX idx_credit_transactions_invoice_id
ON public.credit_transactions ((metadata ->> 'invoice_id'));

COMMENT ON TABLE public.credit_transactions IS
'Append-only credit ledger: signed amount by transaction_type (allocation, refund > 0; usage, expiration < 0; '
'adjustment either), balance_after, unique idempotency_key (invoice:<id> for allocations, refund:<id> for refunds, '
'the caller''s key for usages and adjustments), refund_of (unique). UPDATE, DELETE and TRUNCATE raise BD014.';

-- UPDATE, DELETE and TRUNCATE raise: corrections are new entries.
CREATE TRIGGER credit_transactions_append_only
BEFORE UPDATE OR DELETE ON public.credit_transactions
FOR EACH ROW EXECUTE FUNCTION public._credit_transactions_append_only();

CREATE TRIGGER credit_transactions_no_truncate
BEFORE TRUNCATE ON public.credit_transactions
FOR EACH STATEMENT EXECUTE FUNCTION public._credit_transactions_append_only();

-- What happened to a user's billing, for support and the runbook.
CREATE TABLE public.activity_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text,
    activity_type text NOT NULL CHECK (btrim(activity_type) <> ''),
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_activity_log_user_created ON public.activity_log (user_id, created_at);

COMMENT ON TABLE public.activity_log IS
'Billing activity per user (credits allocated, granted, refunded; subscription created, status changed, '
'transition refused) with details as jsonb.';

-- Tunables, read through public._billing_setting(name).
CREATE TABLE public.billing_settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    description text,
    CHECK (name <> 'cache_ttl_seconds' OR value ~ '^[0-9]{1,6}$'),
    CHECK (name <> 'past_due_can_spend' OR value IN ('true', 'false'))
);

COMMENT ON TABLE public.billing_settings IS
'Billing tunables by name (cache_ttl_seconds, past_due_can_spend, cache_stats_reset_at); read with _billing_setting().';

INSERT INTO public.billing_settings (name, value, description) VALUES
(
    'cache_ttl_seconds', '300',
    'Seconds a subscription_cache row stays valid after it is computed.'
),
(
    'past_due_can_spend', 'true',
    'true: a past_due subscription may still spend credits (grace while Stripe retries the payment).'
),
(
    'cache_stats_reset_at', now()::text,
    'Since when the cache hit/miss counters count (set by clear_all_subscription_cache).'
);

-- Cache hit and miss counters: nextval() is lock-free and not transactional,
-- so counting does not slow or serialise the read path. UNLOGGED (PostgreSQL
-- 15+): a logged sequence writes WAL every 32 calls, which turns a read-only
-- cache hit into a transaction that waits for a WAL flush at commit; the price
-- is that the counters restart after a crash. (sqlfluff cannot parse UNLOGGED
-- SEQUENCE yet, hence the noqa.)
CREATE UNLOGGED SEQUENCE public.subscription_cache_hits AS bigint MINVALUE 0 START WITH 1 CACHE 1; -- noqa: PRS
CREATE UNLOGGED SEQUENCE public.subscription_cache_misses AS bigint MINVALUE 0 START WITH 1 CACHE 1; -- noqa: PRS

COMMENT ON SEQUENCE public.subscription_cache_hits IS
'Counts get_user_subscription_state() cache hits since cache_stats_reset_at.';
COMMENT ON SEQUENCE public.subscription_cache_misses IS
'Counts get_user_subscription_state() cache misses since cache_stats_reset_at.';

-- Row level security everywhere; service_role gets a policy so that a plain
-- PostgreSQL behaves like Supabase (where service_role bypasses RLS).
ALTER TABLE public.plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.subscription_status_transitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.credit_balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.credit_transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.activity_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.billing_settings ENABLE ROW LEVEL SECURITY;

CREATE POLICY service_role_all ON public.plans
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.subscriptions
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.subscription_status_transitions
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.credit_balances
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.credit_transactions
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.activity_log
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.billing_settings
FOR ALL TO service_role USING (true) WITH CHECK (true);

-- Supabase's default privileges grant the client roles everything: take it back.
REVOKE ALL ON TABLE
public.plans,
public.subscriptions,
public.subscription_status_transitions,
public.credit_balances,
public.credit_transactions,
public.activity_log,
public.billing_settings
FROM public, anon, authenticated;

REVOKE ALL ON SEQUENCE
public.subscription_cache_hits,
public.subscription_cache_misses
FROM public, anon, authenticated;

-- service_role: plans and settings are edited directly; the tables whose
-- rules live in the functions (the state machine, the ledger and its balances)
-- are read-only outside them; the activity log is append-only.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE
public.plans,
public.billing_settings
TO service_role;

GRANT SELECT ON TABLE
public.subscriptions,
public.subscription_status_transitions,
public.credit_balances,
public.credit_transactions
TO service_role;

GRANT SELECT, INSERT ON TABLE public.activity_log TO service_role;

GRANT SELECT, USAGE ON SEQUENCE
public.subscription_cache_hits,
public.subscription_cache_misses
TO service_role;
