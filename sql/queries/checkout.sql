-- name: get_plan
-- The plan of a Stripe price as jsonb (null: the price is not a plan).
SELECT public.get_plan(%(price_id)s) AS plan;
