-- pgbench script: hold 1 credit of a random seeded user, then commit the hold,
-- as two transactions (the API's reserve ... generate ... commit, without the generator).
\set uid random(1, :users)
SELECT (public.reserve_credits('bench_user_' || :uid::text, 1, interval '5 minutes') ->> 'hold_id') AS hold_id \gset
SELECT public.commit_credit_hold(:hold_id::bigint);
