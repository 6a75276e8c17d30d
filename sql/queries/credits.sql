-- name: use_credits_validated
-- Spend credits if the subscription state and the balance allow it.
SELECT
    public.use_credits_validated(
        %(user_id)s, %(amount)s, %(description)s, %(metadata)s, %(idempotency_key)s
    ) AS result;

-- name: add_subscription_credits
-- Allocate an invoice's credits (at most once per invoice).
SELECT
    public.add_subscription_credits(
        %(customer_id)s, %(invoice_id)s, %(subscription_id)s, %(credits)s, %(description)s
    ) AS result;

-- name: refund_credits
-- Refund a usage entry (at most once).
SELECT public.refund_credits(%(transaction_id)s, %(reason)s) AS result;

-- name: grant_credits
-- A manual adjustment, positive or negative.
SELECT public.grant_credits(%(user_id)s, %(amount)s, %(reason)s, %(idempotency_key)s) AS result;

-- name: credit_balance
-- A user's balance (0 when the user has no balance row).
SELECT
    coalesce(
        (
            SELECT b.balance
            FROM billingdb.credit_balances AS b
            WHERE b.user_id = %(user_id)s
        ),
        0
    ) AS balance;

-- name: credit_history
-- A user's ledger, newest first.
SELECT
    t.id,
    t.created_at,
    t.transaction_type,
    t.amount,
    t.balance_after,
    t.description,
    t.metadata
FROM public.credit_transactions AS t
WHERE t.user_id = %(user_id)s
ORDER BY t.id DESC
LIMIT %(row_limit)s;
