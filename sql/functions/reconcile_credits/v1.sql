-- reconcile_credits v1 (revision 0004): the seed's weekly reconciliation.
CREATE OR REPLACE FUNCTION public.reconcile_credits(since timestamptz DEFAULT null)
RETURNS TABLE (
    user_id text,
    allocated bigint,
    used bigint,
    refunded bigint,
    adjusted bigint,
    expired bigint,
    ledger_balance bigint,
    balance integer,
    last_balance_after integer,
    findings text[]
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_since constant timestamptz := coalesce(reconcile_credits.since, '-infinity'::timestamptz);
BEGIN
    RETURN QUERY
    WITH
    -- Every user's whole ledger (the integrity needs all of it) and the
    -- period's sums by type (signed as in the ledger: usage is negative).
    ledger AS (
        SELECT
            t.user_id,
            sum(t.amount) AS ledger_balance,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'allocation') AS allocated,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'usage') AS used,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'refund') AS refunded,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'adjustment') AS adjusted,
            sum(t.amount) FILTER (WHERE t.created_at >= v_since AND t.transaction_type = 'expiration') AS expired,
            count(*) FILTER (WHERE t.created_at >= v_since) AS entries_since,
            (array_agg(t.balance_after ORDER BY t.id DESC))[1] AS last_balance_after
        FROM public.credit_transactions AS t
        GROUP BY t.user_id
    ),

    -- Ledger and balance rows side by side (a user may have only one of them).
    joined AS (
        SELECT
            coalesce(l.user_id, b.user_id) AS user_id,
            l.allocated,
            l.used,
            l.refunded,
            l.adjusted,
            l.expired,
            coalesce(l.ledger_balance, 0) AS ledger_balance,
            b.balance,
            l.last_balance_after,
            coalesce(l.entries_since, 0) AS entries_since
        FROM ledger AS l
        FULL JOIN public.credit_balances AS b ON l.user_id = b.user_id
    ),

    -- What is wrong, by name.
    checked AS (
        SELECT
            j.*,
            array_remove(
                ARRAY[
                    CASE WHEN j.balance IS NULL THEN 'missing_balance_row' END,
                    CASE WHEN coalesce(j.balance, 0) <> j.ledger_balance THEN 'balance_mismatch' END,
                    CASE WHEN j.balance < 0 OR j.ledger_balance < 0 THEN 'negative_balance' END,
                    CASE
                        WHEN j.last_balance_after IS DISTINCT FROM j.balance AND j.last_balance_after IS NOT NULL
                            THEN 'balance_after_mismatch'
                    END
                ],
                NULL
            ) AS findings
        FROM joined AS j
    )

    -- Users active since the cut-off, and every user with a finding.
    SELECT
        c.user_id,
        coalesce(c.allocated, 0)::bigint,
        coalesce(c.used, 0)::bigint,
        coalesce(c.refunded, 0)::bigint,
        coalesce(c.adjusted, 0)::bigint,
        coalesce(c.expired, 0)::bigint,
        c.ledger_balance::bigint,
        c.balance,
        c.last_balance_after,
        c.findings
    FROM checked AS c
    WHERE c.entries_since > 0 OR cardinality(c.findings) > 0
    ORDER BY cardinality(c.findings) = 0, c.user_id;
END
$function$;

COMMENT ON FUNCTION public.reconcile_credits(timestamptz) IS
'Contract: one row per user with ledger entries since `since` (null: all time), and per user with a finding at any '
'time: user_id; allocated, used, refunded, adjusted, expired = the sums of that type since `since`, signed as in '
'the ledger (used and expired negative); ledger_balance = sum(amount) of all the user''s entries; balance = the '
'credit_balances row (null when missing); last_balance_after = balance_after of the user''s last entry; findings = '
'the names of what is wrong: balance_mismatch (balance <> ledger_balance, a missing row counting 0), '
'missing_balance_row, negative_balance (balance or ledger_balance below 0), balance_after_mismatch (the last '
'entry''s balance_after <> balance). Rows with findings first. Reads the whole ledger.';

REVOKE ALL ON FUNCTION public.reconcile_credits(timestamptz) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.reconcile_credits(timestamptz) TO service_role;
