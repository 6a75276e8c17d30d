-- name: committed_holds
-- Committed credit holds: a reserve+commit run must add exactly one per pgbench transaction.
SELECT count(*) AS committed
FROM billingdb.credit_holds AS h
WHERE h.status = 'committed';

-- name: sample_hold_commit
-- One reserve + commit pair, to check that the seeded user may hold and spend before a run starts.
SELECT
    public.commit_credit_hold(
        (public.reserve_credits(%(user_id)s::text, 1, interval '5 minutes') ->> 'hold_id')::bigint
    ) AS result;
