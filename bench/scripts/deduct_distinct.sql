-- pgbench script: one credit from a random seeded user (bench_user_1 .. bench_user_:users).
\set uid random(1, :users)
SELECT public.use_credits_validated('bench_user_' || :uid::text, 1, 'bench deduction');
