-- Subscriptions: the plans we sell, one row per Stripe subscription, and the
-- state machine (the allowed status changes, as data) with its one writer,
-- apply_subscription_change().

-- Stripe prices we sell and the credits each grants per billing period.
CREATE TABLE billingdb.plans (
    price_id text PRIMARY KEY CHECK (btrim(price_id) <> ''),
    name text NOT NULL CHECK (btrim(name) <> ''),
    credits_per_period integer NOT NULL CHECK (credits_per_period > 0),
    amount_cents integer CHECK (amount_cents >= 0),
    currency text CHECK (currency ~ '^[a-z]{3}$'),
    billing_interval text CHECK (billing_interval IN ('day', 'week', 'month', 'year')),
    reset_each_period boolean NOT NULL DEFAULT false,
    -- What a mid-period upgrade to this plan grants: the difference between the
    -- plans' credits, this plan's full credits, or nothing (a downgrade grants
    -- nothing: the new plan's credits come with the next renewal).
    change_credits text NOT NULL DEFAULT 'difference' CHECK (change_credits IN ('difference', 'full', 'none')),
    active boolean NOT NULL DEFAULT true,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE billingdb.plans IS
'Stripe price id -> plan name and credits granted per paid period; reset_each_period: unused credits of the '
'ended period expire when the next invoice allocates (see add_subscription_credits); change_credits: what a '
'mid-period upgrade to this plan grants (difference, full, none). Written by set_plan().';

-- _valid_subscription: subscriptions' row rules, the table's one CHECK (see
-- _valid_credit_transaction for why a function). IMMUTABLE, no table access: neither SECURITY DEFINER
-- nor SET search_path.
CREATE OR REPLACE FUNCTION billingdb._valid_subscription(
    subscription_id text,
    user_id text,
    stripe_customer_id text,
    status text,
    current_period_start timestamptz,
    current_period_end timestamptz
)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SECURITY INVOKER
AS $function$
BEGIN
    -- As a CHECK reads it: false breaks a rule, true or null (a null input) passes.
    RETURN
        subscription_id ~ '^sub_'
        AND pg_catalog.btrim(user_id) <> ''
        AND stripe_customer_id ~ '^cus_'
        -- Stripe's eight subscription statuses.
        AND status IN (
            'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'unpaid', 'canceled', 'paused'
        )
        AND current_period_end >= current_period_start;
END
$function$;

COMMENT ON FUNCTION billingdb._valid_subscription(text, text, text, text, timestamptz, timestamptz) IS
'Internal, the CHECK of subscriptions (constraint subscriptions_valid). Contract: false when a row breaks a rule, '
'else true (null when an input it needs is null, which a CHECK passes). Rules: subscription_id starts with sub_; '
'user_id is not blank; stripe_customer_id starts with cus_; status is one of Stripe''s incomplete, '
'incomplete_expired, trialing, active, past_due, unpaid, canceled, paused; the period does not end before it '
'starts. IMMUTABLE: changing the rules needs a new version and a revision that validates the stored rows again.';

REVOKE ALL ON FUNCTION billingdb._valid_subscription(text, text, text, text, timestamptz, timestamptz)
FROM public, anon, authenticated;

-- One row per Stripe subscription, written only by apply_subscription_change().
CREATE TABLE billingdb.subscriptions (
    subscription_id text PRIMARY KEY,
    user_id text NOT NULL,
    stripe_customer_id text,
    status text NOT NULL,
    price_id text,
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    canceled_at timestamptz,
    last_event_created timestamptz,
    last_event_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- The row rules, in one CHECK (see _valid_subscription).
    CONSTRAINT subscriptions_valid CHECK (
        billingdb._valid_subscription(
            subscription_id, user_id, stripe_customer_id, status, current_period_start, current_period_end
        )
    )
);

CREATE INDEX idx_subscriptions_user_id ON billingdb.subscriptions (user_id);

COMMENT ON TABLE billingdb.subscriptions IS
'One row per Stripe subscription (status, price, period, cancellation). last_event_created + last_event_id are '
'the watermark of the last applied Stripe event. Only apply_subscription_change() writes it.';

-- The state machine as data: every allowed change of status (from <> to).
-- A same-status update (active -> active with a new period) is always allowed
-- and is not a row here. canceled and incomplete_expired are terminal: no row
-- leaves them. Source: Stripe's Subscription.status documentation.
CREATE TABLE billingdb.subscription_status_transitions (
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

COMMENT ON TABLE billingdb.subscription_status_transitions IS
'Allowed subscription status changes (from_status <> to_status); same-status updates are always allowed and are '
'not listed; canceled and incomplete_expired are terminal. apply_subscription_change() refuses any other change.';

INSERT INTO billingdb.subscription_status_transitions (from_status, to_status) VALUES
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

-- Private: row level security with no policy (only the owner, through the
-- entry points, reads or writes), and no privilege for any other role.
ALTER TABLE billingdb.plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE billingdb.subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE billingdb.subscription_status_transitions ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON TABLE billingdb.plans, billingdb.subscriptions, billingdb.subscription_status_transitions
FROM public, anon, authenticated, service_role;

CREATE OR REPLACE FUNCTION public.set_plan(
    price_id text,
    name text,
    credits_per_period integer,
    reset_each_period boolean DEFAULT false,
    amount_cents integer DEFAULT null,
    currency text DEFAULT null,
    billing_interval text DEFAULT null,
    active boolean DEFAULT true,
    change_credits text DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_price_id constant text := btrim(set_plan.price_id);
    v_name constant text := btrim(set_plan.name);
    v_credits constant integer := set_plan.credits_per_period;
    v_reset constant boolean := coalesce(set_plan.reset_each_period, false);
    v_amount_cents constant integer := set_plan.amount_cents;
    v_currency constant text := lower(nullif(btrim(set_plan.currency), ''));
    v_interval constant text := lower(nullif(btrim(set_plan.billing_interval), ''));
    v_active constant boolean := coalesce(set_plan.active, true);
    v_change constant text := lower(nullif(btrim(set_plan.change_credits), ''));
    v_old billingdb.plans;
    v_row billingdb.plans;
    v_created boolean;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_text('set_plan', 'price_id', v_price_id, 255);
    PERFORM billingdb._check_text('set_plan', 'name', v_name, 200);

    -- Arguments: the table's rules, checked first for a clear message.
    IF v_price_id IS NULL OR v_price_id = '' THEN
        RAISE EXCEPTION 'set_plan: price_id is required (price_id=%)', coalesce(quote_literal(v_price_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the Stripe price id (price_...).';
    END IF;
    IF v_name IS NULL OR v_name = '' THEN
        RAISE EXCEPTION 'set_plan: name is required (price_id=%)', v_price_id
            USING ERRCODE = '22023';
    END IF;
    IF v_credits IS NULL OR v_credits <= 0 THEN
        RAISE EXCEPTION 'set_plan: credits_per_period must be a positive integer (price_id=%, credits_per_period=%)',
            v_price_id, coalesce(v_credits::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF v_amount_cents < 0 THEN
        RAISE EXCEPTION 'set_plan: amount_cents must not be negative (price_id=%, amount_cents=%)',
            v_price_id, v_amount_cents
            USING ERRCODE = '22023';
    END IF;
    IF v_currency !~ '^[a-z]{3}$' THEN
        RAISE EXCEPTION 'set_plan: currency must be an ISO 4217 code (price_id=%, currency=%)',
            v_price_id, quote_literal(v_currency)
            USING ERRCODE = '22023', HINT = 'For example usd or eur.';
    END IF;
    IF v_interval NOT IN ('day', 'week', 'month', 'year') THEN
        RAISE EXCEPTION 'set_plan: unknown billing interval (price_id=%, billing_interval=%)',
            v_price_id, quote_literal(v_interval)
            USING ERRCODE = '22023', HINT = 'One of day, week, month, year.';
    END IF;
    IF v_change NOT IN ('difference', 'full', 'none') THEN
        RAISE EXCEPTION 'set_plan: unknown plan-change policy (price_id=%, change_credits=%)',
            v_price_id, quote_literal(v_change)
            USING ERRCODE = '22023',
                HINT = 'difference (the credits between the plans, the default), full (this plan''s credits) or none.';
    END IF;

    -- Create, or lock and update the existing plan.
    INSERT INTO billingdb.plans AS p (
        price_id, name, credits_per_period, reset_each_period, change_credits, amount_cents, currency,
        billing_interval, active
    )
    VALUES (
        v_price_id, v_name, v_credits, v_reset, coalesce(v_change, 'difference'), v_amount_cents, v_currency,
        v_interval, v_active
    )
    ON CONFLICT ON CONSTRAINT plans_pkey DO NOTHING
    RETURNING p.* INTO v_row;
    v_created := FOUND;
    IF NOT v_created THEN
        SELECT p.* INTO STRICT v_old FROM billingdb.plans AS p WHERE p.price_id = v_price_id FOR UPDATE;
        UPDATE billingdb.plans AS p
        SET
            name = v_name,
            credits_per_period = v_credits,
            reset_each_period = v_reset,
            change_credits = coalesce(v_change, p.change_credits),
            amount_cents = v_amount_cents,
            currency = v_currency,
            billing_interval = v_interval,
            active = v_active,
            updated_at = now()
        WHERE p.price_id = v_price_id
        RETURNING p.* INTO v_row;
    END IF;

    -- The plan name is part of cached states: drop the rows that show this price.
    IF v_created OR v_old.name IS DISTINCT FROM v_name THEN
        DELETE FROM public.subscription_cache AS c WHERE c.price_id = v_price_id;
    END IF;

    RETURN to_jsonb(v_row) || jsonb_build_object('created', v_created);
END
$function$;

COMMENT ON FUNCTION public.set_plan(text, text, integer, boolean, integer, text, text, boolean, text) IS
'Contract: creates or updates the plan of a Stripe price (upsert by price_id; metadata is kept) and returns the plan '
'row as jsonb {price_id, name, credits_per_period, amount_cents, currency, billing_interval, reset_each_period, '
'change_credits, active, metadata, created_at, updated_at} plus created (true when new). change_credits: what a '
'mid-period upgrade to this plan grants, difference (default), full or none; null keeps the stored policy. currency and billing_interval are '
'lower-cased; a null reset_each_period or active takes its default. A new plan or a new name drops the '
'subscription_cache rows of that price (the next read recomputes them). Errors: 22023 when price_id or name is null '
'or blank, credits_per_period is null or <= 0, amount_cents < 0, currency is not 3 letters, billing_interval is '
'not day, week, month or year, or change_credits is not difference, full or none.';

REVOKE ALL ON FUNCTION public.set_plan(text, text, integer, boolean, integer, text, text, boolean, text)
FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.set_plan(text, text, integer, boolean, integer, text, text, boolean, text)
TO service_role;

-- get_plan: one plan, for callers that may not read the private table (checkout).
CREATE OR REPLACE FUNCTION public.get_plan(price_id text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_price_id constant text := get_plan.price_id;
BEGIN
    -- The plan as jsonb; null when the price is not a plan.
    RETURN (
        SELECT jsonb_build_object(
            'price_id', p.price_id, 'name', p.name, 'credits_per_period', p.credits_per_period,
            'reset_each_period', p.reset_each_period, 'change_credits', p.change_credits,
            'amount_cents', p.amount_cents, 'currency', p.currency,
            'billing_interval', p.billing_interval, 'active', p.active
        )
        FROM billingdb.plans AS p
        WHERE p.price_id = v_price_id
    );
END
$function$;

COMMENT ON FUNCTION public.get_plan(text) IS
'Contract: the plan of a Stripe price as jsonb {price_id, name, credits_per_period, reset_each_period, change_credits, '
'amount_cents, '
'currency, billing_interval, active}, or null when the price is not a plan (or price_id is null). Never raises.';

REVOKE ALL ON FUNCTION public.get_plan(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_plan(text) TO service_role;

-- _spending_refusal: the spending rule, in one place.
CREATE OR REPLACE FUNCTION billingdb._spending_refusal(
    status text,
    cancel_at_period_end boolean,
    current_period_end timestamptz
)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
DECLARE
    v_status constant text := _spending_refusal.status;
    v_cancel constant boolean := coalesce(_spending_refusal.cancel_at_period_end, false);
    v_period_end constant timestamptz := _spending_refusal.current_period_end;
BEGIN
    -- No subscription at all.
    IF v_status IS NULL THEN
        RETURN 'no_subscription';
    END IF;

    -- Never: before the first payment, after it expired, unpaid, paused.
    IF v_status IN ('incomplete', 'incomplete_expired', 'unpaid', 'paused') THEN
        RETURN 'subscription_inactive';
    END IF;

    -- past_due: a grace period while Stripe retries, unless the setting is off.
    IF v_status = 'past_due'
        AND coalesce(billingdb._billing_setting('past_due_can_spend'), 'true') <> 'true' THEN
        RETURN 'subscription_inactive';
    END IF;

    -- Canceled, or ending at the period end: until the paid period is over.
    IF v_status = 'canceled' OR v_cancel THEN
        IF v_period_end IS NULL THEN
            -- A canceled subscription without a known period has nothing left;
            -- a running one set to cancel keeps its status' rule.
            RETURN CASE WHEN v_status = 'canceled' THEN 'subscription_inactive' END;
        END IF;
        IF v_period_end <= now() THEN
            RETURN 'period_ended';
        END IF;
    END IF;

    -- trialing, active, past_due (with grace), or canceled/ending before the period end.
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION billingdb._spending_refusal(text, boolean, timestamptz) IS
'Internal: the spending rule (docs/design.md). Contract: null when a subscription with this status, '
'cancel_at_period_end and current_period_end may spend credits now, else the reason: no_subscription (status null); '
'subscription_inactive (incomplete, incomplete_expired, unpaid, paused; past_due when the setting past_due_can_spend '
'is not true; canceled without a known period end); period_ended (canceled or cancel_at_period_end, and '
'current_period_end <= now()). trialing, active and past_due (grace on, the default) may spend; canceled and '
'cancel_at_period_end until current_period_end.';

REVOKE ALL ON FUNCTION billingdb._spending_refusal(text, boolean, timestamptz) FROM public, anon, authenticated;

-- _refusal_message: what a refused spend says, from the state that refused it.
CREATE OR REPLACE FUNCTION billingdb._refusal_message(state jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SECURITY INVOKER
AS $function$
BEGIN
    -- One sentence per refusal code of _spending_refusal.
    RETURN CASE _refusal_message.state ->> 'reason'
        WHEN 'no_subscription' THEN 'No subscription: credits cannot be used'
        WHEN 'period_ended' THEN format(
            'The subscription period ended at %s: credits cannot be used',
            _refusal_message.state ->> 'current_period_end'
        )
        ELSE format('Subscription status %s does not allow using credits', _refusal_message.state ->> 'status')
    END;
END
$function$;

COMMENT ON FUNCTION billingdb._refusal_message(jsonb) IS
'Internal, pure. Contract: the message of a refused spend for a state from _compute_subscription_state (its reason '
'no_subscription, period_ended, or a status that may not spend).';

REVOKE ALL ON FUNCTION billingdb._refusal_message(jsonb) FROM public, anon, authenticated;

-- apply_subscription_change: the one writer of billingdb.subscriptions.
CREATE OR REPLACE FUNCTION public.apply_subscription_change(
    subscription_id text,
    user_id text,
    customer_id text,
    status text,
    price_id text,
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean,
    canceled_at timestamptz,
    event_created timestamptz DEFAULT null,
    event_id text DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_subscription_id constant text := apply_subscription_change.subscription_id;
    v_user_id text := nullif(btrim(apply_subscription_change.user_id), '');
    v_customer_id constant text := nullif(btrim(apply_subscription_change.customer_id), '');
    v_status constant text := apply_subscription_change.status;
    v_price_id constant text := nullif(btrim(apply_subscription_change.price_id), '');
    v_period_start constant timestamptz := apply_subscription_change.current_period_start;
    v_period_end constant timestamptz := apply_subscription_change.current_period_end;
    v_cancel constant boolean := coalesce(apply_subscription_change.cancel_at_period_end, false);
    v_canceled_at constant timestamptz := apply_subscription_change.canceled_at;
    v_event_created constant timestamptz := apply_subscription_change.event_created;
    v_event_id constant text := nullif(btrim(apply_subscription_change.event_id), '');
    v_owner text;
    v_old billingdb.subscriptions;
    v_result text;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_stripe_id('apply_subscription_change', 'subscription_id', v_subscription_id, 'sub_');
    PERFORM billingdb._check_text('apply_subscription_change', 'user_id', v_user_id, 255);
    PERFORM billingdb._check_stripe_id('apply_subscription_change', 'customer_id', v_customer_id, 'cus_');
    PERFORM billingdb._check_text('apply_subscription_change', 'price_id', v_price_id, 255);
    PERFORM billingdb._check_text('apply_subscription_change', 'event_id', v_event_id, 255);

    -- Arguments: a subscription id, one of Stripe's 8 statuses, a sane period,
    -- a user or a customer, an event id only with its time.
    IF v_subscription_id IS NULL OR v_subscription_id !~ '^sub_' THEN
        RAISE EXCEPTION 'apply_subscription_change: malformed subscription id (subscription_id=%)',
            coalesce(quote_literal(v_subscription_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe subscription ids start with sub_.';
    END IF;
    IF v_status IS NULL OR v_status NOT IN (
        'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'unpaid', 'canceled', 'paused'
    ) THEN
        RAISE EXCEPTION 'apply_subscription_change: unknown status (subscription_id=%, status=%)',
            v_subscription_id, coalesce(quote_literal(v_status), 'NULL')
            USING ERRCODE = '22023',
                HINT = 'One of incomplete, incomplete_expired, trialing, active, past_due, unpaid, canceled, paused.';
    END IF;
    IF v_customer_id IS NOT NULL AND v_customer_id !~ '^cus_' THEN
        RAISE EXCEPTION 'apply_subscription_change: malformed customer id (subscription_id=%, customer_id=%)',
            v_subscription_id, quote_literal(v_customer_id)
            USING ERRCODE = '22023', HINT = 'Stripe customer ids start with cus_.';
    END IF;
    IF v_period_end < v_period_start THEN
        RAISE EXCEPTION 'apply_subscription_change: period ends before it starts '
            '(subscription_id=%, current_period_start=%, current_period_end=%)',
            v_subscription_id, v_period_start, v_period_end
            USING ERRCODE = '22023';
    END IF;
    IF v_user_id IS NULL AND v_customer_id IS NULL THEN
        RAISE EXCEPTION 'apply_subscription_change: user_id or customer_id is required (subscription_id=%)',
            v_subscription_id
            USING ERRCODE = '22023';
    END IF;
    IF v_event_id IS NOT NULL AND v_event_created IS NULL THEN
        RAISE EXCEPTION 'apply_subscription_change: event_id without event_created (subscription_id=%, event_id=%)',
            v_subscription_id, v_event_id
            USING ERRCODE = '22023', HINT = 'Pass the event''s created time with its id.';
    END IF;

    -- The user: the one given, else the one the customer is linked to; both
    -- given must agree with the customer mapping.
    IF v_customer_id IS NOT NULL THEN
        SELECT c.user_id INTO v_owner FROM billingdb.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id;
        IF v_user_id IS NULL AND v_owner IS NULL THEN
            RAISE EXCEPTION 'apply_subscription_change: unknown customer (subscription_id=%, customer_id=%)',
                v_subscription_id, v_customer_id
                USING ERRCODE = 'BD001',
                    HINT = 'Link the customer first (link_stripe_customer) or pass user_id; then retry.';
        END IF;
        IF v_user_id IS NOT NULL AND v_owner IS NOT NULL AND v_owner <> v_user_id THEN
            RAISE EXCEPTION 'apply_subscription_change: customer linked to another user '
                '(subscription_id=%, customer_id=%, user_id=%, linked_user_id=%)',
                v_subscription_id, v_customer_id, v_user_id, v_owner
                USING ERRCODE = 'BD004';
        END IF;
        v_user_id := coalesce(v_user_id, v_owner);
    END IF;

    -- Serialise with every other write of this user, then lock the row.
    PERFORM billingdb._lock_user(v_user_id);
    SELECT s.* INTO v_old FROM billingdb.subscriptions AS s WHERE s.subscription_id = v_subscription_id FOR UPDATE;

    -- New subscription: any status (its earlier events may still be on the way).
    IF NOT FOUND THEN
        INSERT INTO billingdb.subscriptions AS s (
            subscription_id, user_id, stripe_customer_id, status, price_id,
            current_period_start, current_period_end, cancel_at_period_end, canceled_at,
            last_event_created, last_event_id
        )
        VALUES (
            v_subscription_id, v_user_id, v_customer_id, v_status, v_price_id,
            v_period_start, v_period_end, v_cancel, v_canceled_at,
            v_event_created, v_event_id
        )
        ON CONFLICT ON CONSTRAINT subscriptions_pkey DO NOTHING;
        IF FOUND THEN
            INSERT INTO billingdb.activity_log (user_id, activity_type, details)
            VALUES (
                v_user_id, 'subscription_created',
                jsonb_build_object(
                    'subscription_id', v_subscription_id, 'status', v_status, 'price_id', v_price_id,
                    'event_id', v_event_id, 'event_created', v_event_created
                )
            );
            PERFORM billingdb._store_subscription_cache(v_user_id, billingdb._compute_subscription_state(v_user_id));
            RETURN jsonb_build_object(
                'applied', true, 'result', 'created', 'from_status', NULL, 'to_status', v_status,
                'subscription_id', v_subscription_id, 'user_id', v_user_id
            );
        END IF;
        -- Created meanwhile under another user (we hold only our user's lock).
        SELECT s.* INTO STRICT v_old
        FROM billingdb.subscriptions AS s
        WHERE s.subscription_id = v_subscription_id
        FOR UPDATE;
    END IF;

    -- A subscription belongs to one user and one customer.
    IF v_old.user_id <> v_user_id
        OR (v_customer_id IS NOT NULL AND v_old.stripe_customer_id <> v_customer_id) THEN
        RAISE EXCEPTION 'apply_subscription_change: subscription belongs to another user or customer '
            '(subscription_id=%, user_id=%, customer_id=%, stored_user_id=%, stored_customer_id=%)',
            v_subscription_id, v_user_id, v_customer_id, v_old.user_id, v_old.stripe_customer_id
            USING ERRCODE = 'BD013';
    END IF;

    -- Ordering by the watermark (events only; a call without event_created is
    -- authoritative). Older: stale. Same second: only a status change can be
    -- progress; the same event again or the same status is stale, and a
    -- status change goes to the state machine below (forward progress wins).
    IF v_event_created IS NOT NULL AND v_old.last_event_created IS NOT NULL THEN
        IF v_event_created < v_old.last_event_created
            OR (
                v_event_created = v_old.last_event_created
                AND (v_event_id IS NOT DISTINCT FROM v_old.last_event_id OR v_status = v_old.status)
            ) THEN
            RETURN jsonb_build_object(
                'applied', false, 'result', 'stale', 'from_status', v_old.status, 'to_status', v_status,
                'subscription_id', v_subscription_id, 'user_id', v_user_id
            );
        END IF;
    END IF;

    -- The state machine. A strictly newer event is Stripe's newest snapshot:
    -- it applies whatever the transitions table says (an unexpected change is
    -- logged, not refused: refusing it would keep a state Stripe has left).
    -- The table decides a same-second tie (forward progress wins) and a call
    -- without an event; a refused change there changes nothing and is logged.
    IF v_status <> v_old.status AND NOT EXISTS (
        SELECT FROM billingdb.subscription_status_transitions AS tr
        WHERE tr.from_status = v_old.status AND tr.to_status = v_status
    ) AND v_event_created IS NOT NULL AND (
        v_old.last_event_created IS NULL OR v_event_created > v_old.last_event_created
    ) THEN
        INSERT INTO billingdb.activity_log (user_id, activity_type, details)
        VALUES (
            v_user_id, 'subscription_unexpected_transition',
            jsonb_build_object(
                'subscription_id', v_subscription_id, 'from_status', v_old.status, 'to_status', v_status,
                'event_id', v_event_id, 'event_created', v_event_created,
                'reason', 'a newer Stripe event: applied although the transitions table does not list it'
            )
        );
    ELSIF v_status <> v_old.status AND NOT EXISTS (
        SELECT FROM billingdb.subscription_status_transitions AS tr
        WHERE tr.from_status = v_old.status AND tr.to_status = v_status
    ) THEN
        INSERT INTO billingdb.activity_log (user_id, activity_type, details)
        VALUES (
            v_user_id, 'subscription_transition_refused',
            jsonb_build_object(
                'subscription_id', v_subscription_id, 'from_status', v_old.status, 'to_status', v_status,
                'event_id', v_event_id, 'event_created', v_event_created
            )
        );
        RETURN jsonb_build_object(
            'applied', false, 'result', 'refused_transition', 'from_status', v_old.status, 'to_status', v_status,
            'subscription_id', v_subscription_id, 'user_id', v_user_id
        );
    END IF;

    -- Nothing differs: only the watermark moves.
    IF (
        v_old.stripe_customer_id, v_old.status, v_old.price_id, v_old.current_period_start,
        v_old.current_period_end, v_old.cancel_at_period_end, v_old.canceled_at
    ) IS NOT DISTINCT FROM (
        coalesce(v_customer_id, v_old.stripe_customer_id), v_status, v_price_id, v_period_start,
        v_period_end, v_cancel, v_canceled_at
    ) THEN
        v_result := 'unchanged';
        IF v_event_created IS NOT NULL THEN
            UPDATE billingdb.subscriptions AS s
            SET last_event_created = v_event_created, last_event_id = v_event_id
            WHERE s.subscription_id = v_subscription_id;
        END IF;
    ELSE
        -- Apply the change and move the watermark (kept by an authoritative call).
        v_result := 'updated';
        UPDATE billingdb.subscriptions AS s
        SET
            stripe_customer_id = coalesce(v_customer_id, s.stripe_customer_id),
            status = v_status,
            price_id = v_price_id,
            current_period_start = v_period_start,
            current_period_end = v_period_end,
            cancel_at_period_end = v_cancel,
            canceled_at = v_canceled_at,
            last_event_created = coalesce(v_event_created, s.last_event_created),
            last_event_id = CASE WHEN v_event_created IS NULL THEN s.last_event_id ELSE v_event_id END,
            updated_at = now()
        WHERE s.subscription_id = v_subscription_id;
        IF v_price_id IS DISTINCT FROM v_old.price_id AND v_price_id IS NOT NULL AND v_old.price_id IS NOT NULL THEN
            INSERT INTO billingdb.activity_log (user_id, activity_type, details)
            VALUES (
                v_user_id, 'subscription_plan_changed',
                jsonb_build_object(
                    'subscription_id', v_subscription_id, 'from_price_id', v_old.price_id, 'to_price_id', v_price_id,
                    'event_id', v_event_id, 'event_created', v_event_created
                )
            );
        END IF;
        IF v_status <> v_old.status THEN
            INSERT INTO billingdb.activity_log (user_id, activity_type, details)
            VALUES (
                v_user_id, 'subscription_status_changed',
                jsonb_build_object(
                    'subscription_id', v_subscription_id, 'from_status', v_old.status, 'to_status', v_status,
                    'event_id', v_event_id, 'event_created', v_event_created
                )
            );
        END IF;
        PERFORM billingdb._store_subscription_cache(v_user_id, billingdb._compute_subscription_state(v_user_id));
    END IF;

    RETURN jsonb_build_object(
        'applied', v_result = 'updated', 'result', v_result, 'from_status', v_old.status, 'to_status', v_status,
        'subscription_id', v_subscription_id, 'user_id', v_user_id
    );
END
$function$;

COMMENT ON FUNCTION public.apply_subscription_change(
    text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, text
) IS
'Contract: the one entry point that writes billingdb.subscriptions. Applies a Stripe subscription''s state (status, '
'price_id, period, cancel_at_period_end, canceled_at) to subscription_id for user_id (or, when null, the user linked '
'to customer_id). Returns jsonb {applied, result, from_status, to_status, subscription_id, user_id}; result: created '
'(new row, any status), updated (applied), unchanged (nothing differs; an event still moves the watermark), '
'refused_transition (the status change is not in subscription_status_transitions: nothing changes, logged as '
'subscription_transition_refused in activity_log), stale (nothing changes). applied is true for created and updated. '
'Ordering: the watermark is the last applied event (last_event_created, last_event_id). An event strictly newer than '
'it (or the first one) is applied whatever the transitions table says: it is Stripe''s newest snapshot (a change '
'the table does not list is logged as subscription_unexpected_transition). An older one is stale. Same second (tie): the '
'same event id again, or the same status, is stale; a status change is applied only if the transition is allowed '
'(forward progress wins), else refused_transition. event_created null: an authoritative manual call, applied if '
'the transition is allowed, the watermark kept. Same-status updates are always allowed. Applied changes log '
'subscription_created / subscription_status_changed / subscription_plan_changed (a new price) and refresh the '
'user''s cache row. Errors: 22023 for a '
'malformed subscription (sub_) or customer (cus_) id, an unknown status, current_period_end < current_period_start, '
'neither user_id nor customer_id, or event_id without event_created; BD001 when user_id is null and no user is '
'linked to customer_id; BD004 when customer_id is linked to another user; BD013 when the subscription belongs to '
'another user or customer.';

REVOKE ALL ON FUNCTION public.apply_subscription_change(
    text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, text
) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.apply_subscription_change(
    text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, text
) TO service_role;
