-- name: get_plan
-- The plan of a Stripe price (no row: the price is not a plan).
SELECT
    p.price_id,
    p.name,
    p.credits_per_period,
    p.reset_each_period,
    p.amount_cents,
    p.currency,
    p.billing_interval,
    p.active
FROM public.plans AS p
WHERE p.price_id = %(price_id)s;
