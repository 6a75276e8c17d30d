-- pgbench script: the subscription state of a random seeded user (bench_user_1 .. bench_user_:users).
-- Hits or misses depend on the run's setup (cache TTL), not on this script.
\set uid random(1, :users)
SELECT public.get_user_subscription_state('bench_user_' || :uid::text);
