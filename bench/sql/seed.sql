-- name: seed_plan
-- The plan every bench user subscribes to (through set_plan, like an operator would).
SELECT
    public.set_plan(
        %(price_id)s::text, 'Bench', 1000, false, 1000, 'usd', 'month', true
    ) AS plan;

-- name: seed_customers
-- Users 0 .. N linked to Stripe customers cus_bench_0 .. cus_bench_N (user 0 is the hot user).
SELECT count(public.link_stripe_customer(u.user_id, 'cus_bench_' || u.n)) AS linked
FROM (
    SELECT
        g.n,
        %(prefix)s::text || g.n AS user_id
    FROM generate_series(0, %(users)s::integer) AS g (n)
) AS u;

-- name: seed_subscriptions
-- One active subscription per user on the bench plan, period running for 30 more days.
SELECT
    count(
        public.apply_subscription_change(
            'sub_bench_' || u.n,
            u.user_id,
            'cus_bench_' || u.n,
            'active',
            %(price_id)s::text,
            now() - interval '1 day',
            now() + interval '30 days',
            false,
            null,
            now(),
            null
        )
    ) AS applied
FROM (
    SELECT
        g.n,
        %(prefix)s::text || g.n AS user_id
    FROM generate_series(0, %(users)s::integer) AS g (n)
) AS u;

-- name: seed_credits
-- A balance far above what a run deducts; the hot user gets more, it takes every deduction of its runs.
SELECT
    count(
        public.grant_credits(
            u.user_id,
            CASE WHEN u.n = 0 THEN %(hot_balance)s::integer ELSE %(balance)s::integer END,
            'bench seed',
            'bench-seed-' || u.n
        )
    ) AS granted
FROM (
    SELECT
        g.n,
        %(prefix)s::text || g.n AS user_id
    FROM generate_series(0, %(users)s::integer) AS g (n)
) AS u;

-- name: seed_check
-- How many seeded users may spend (all of them, or the seed went wrong), and one state that may not.
SELECT
    count(*) AS total,
    count(*) FILTER (WHERE (s.state ->> 'can_use_credits')::boolean) AS usable,
    (array_agg(s.state) FILTER (WHERE NOT coalesce((s.state ->> 'can_use_credits')::boolean, false)))[1] AS sample
FROM (
    SELECT public.get_user_subscription_state(%(prefix)s::text || g.n) AS state
    FROM generate_series(0, %(users)s::integer) AS g (n)
) AS s;

-- name: vacuum_analyze
-- Fresh statistics and visibility maps after seeding, so autovacuum does not start mid-run.
VACUUM (ANALYZE);
