-- name: reserve_credits
-- Hold credits of a user for a while (out of the spendable balance).
SELECT
    public.reserve_credits(
        %(user_id)s, %(amount)s, %(ttl)s::interval, %(idempotency_key)s, %(description)s, %(metadata)s
    ) AS result;

-- name: commit_credit_hold
-- Spend a held hold (its usage entry), recording the work's result.
SELECT public.commit_credit_hold(%(hold_id)s, %(result)s) AS result;

-- name: release_credit_hold
-- Give a held hold's credits back.
SELECT public.release_credit_hold(%(hold_id)s, %(reason)s) AS result;

-- name: release_expired_credit_holds
-- The sweep: release holds whose expires_at passed; returns how many.
SELECT public.release_expired_credit_holds(%(max_holds)s) AS result;

-- name: credit_holds
-- A user's holds, newest first.
SELECT billingdb._credit_hold_json(h.*) AS hold
FROM billingdb.credit_holds AS h
WHERE h.user_id = %(user_id)s
ORDER BY h.hold_id DESC
LIMIT %(row_limit)s;
