-- name: get_user_subscription_state
-- The user's subscription state, from the 5-minute cache when valid.
SELECT public.get_user_subscription_state(%(user_id)s) AS result;

-- name: update_subscription_cache
-- Recompute and store the user's cache row.
SELECT public.update_subscription_cache(%(user_id)s) AS result;

-- name: apply_subscription_change
-- The one entry point that writes subscription state.
SELECT
    public.apply_subscription_change(
        %(subscription_id)s,
        %(user_id)s,
        %(customer_id)s,
        %(status)s,
        %(price_id)s,
        %(current_period_start)s,
        %(current_period_end)s,
        %(cancel_at_period_end)s,
        %(canceled_at)s,
        %(event_created)s,
        %(event_id)s
    ) AS result;

-- name: clear_expired_subscription_cache
-- Delete expired cache rows; returns how many.
SELECT public.clear_expired_subscription_cache() AS result;

-- name: clear_all_subscription_cache
-- Delete every cache row and reset the hit/miss counters; returns how many rows.
SELECT public.clear_all_subscription_cache() AS result;

-- name: get_subscription_cache_status
-- Cache health: counts, hit rate, average age, ttl.
SELECT public.get_subscription_cache_status() AS result;

-- name: set_plan
-- Create or update the plan of a Stripe price.
SELECT
    public.set_plan(
        %(price_id)s,
        %(name)s,
        %(credits_per_period)s,
        %(reset_each_period)s,
        %(amount_cents)s,
        %(currency)s,
        %(billing_interval)s,
        %(active)s,
        %(change_credits)s
    ) AS result;

-- name: list_plans
-- Every plan, cheapest first.
SELECT
    p.price_id,
    p.name,
    p.credits_per_period,
    p.reset_each_period,
    p.change_credits,
    p.amount_cents,
    p.currency,
    p.billing_interval,
    p.active
FROM billingdb.plans AS p
ORDER BY p.credits_per_period, p.price_id;

-- name: get_or_create_stripe_customer
-- The user's customer mapping, created when missing.
SELECT public.get_or_create_stripe_customer(%(user_id)s, %(email)s) AS result;

-- name: link_stripe_customer
-- Link a user to a Stripe customer id.
SELECT public.link_stripe_customer(%(user_id)s, %(stripe_customer_id)s) AS result;

-- name: set_billing_setting
-- Set one tunable (22023 for an unknown name or a value not of its kind).
SELECT public.set_billing_setting(%(name)s, %(value)s) AS result;

-- name: billing_settings
-- Every tunable with its value and what it means (the owner reads the private table).
SELECT
    s.name,
    s.value,
    s.description
FROM billingdb.billing_settings AS s
ORDER BY s.name;

-- name: sync_stripe_subscription
-- One subscription from Stripe's API against billingdb's row: {subscription_id, fields, result, applied, ...}.
SELECT public.sync_stripe_subscription(%(subscription)s::jsonb, %(observed_at)s::timestamptz, %(apply)s) AS result;

-- name: sync_stripe_invoice
-- One invoice from Stripe's API against the ledger, allocated once with apply: {invoice_id, result, applied, ...}.
SELECT public.sync_stripe_invoice(%(invoice)s::jsonb, %(observed_at)s::timestamptz, %(apply)s) AS result;
