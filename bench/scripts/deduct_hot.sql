-- pgbench script: one credit from the hot user bench_user_0, which every client hits.
-- Same statement as deduct_distinct.sql; only the user differs.
\set uid 0
SELECT public.use_credits_validated('bench_user_' || :uid::text, 1, 'bench deduction');
