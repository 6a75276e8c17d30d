-- refund_credits v1 (revision 0002): give back a usage, once.
CREATE OR REPLACE FUNCTION public.refund_credits(transaction_id bigint, reason text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_transaction_id constant bigint := refund_credits.transaction_id;
    v_reason constant text := nullif(btrim(refund_credits.reason), '');
    v_usage public.credit_transactions;
    v_prior public.credit_transactions;
    v_balance integer;
    v_tx public.credit_transactions;
BEGIN
    -- A transaction id is required.
    IF v_transaction_id IS NULL THEN
        RAISE EXCEPTION 'refund_credits: transaction_id is required (transaction_id=NULL)'
            USING ERRCODE = '22023';
    END IF;

    -- The entry to refund: it exists and is a usage.
    SELECT t.* INTO v_usage FROM public.credit_transactions AS t WHERE t.id = v_transaction_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'refund_credits: unknown credit transaction (transaction_id=%)', v_transaction_id
            USING ERRCODE = 'BD010', HINT = 'Pass the transaction_id returned by use_credits_validated().';
    END IF;
    IF v_usage.transaction_type <> 'usage' THEN
        RAISE EXCEPTION 'refund_credits: only usages can be refunded (transaction_id=%, transaction_type=%)',
            v_transaction_id, v_usage.transaction_type
            USING ERRCODE = 'BD011', HINT = 'Correct other entries with grant_credits().';
    END IF;

    -- Serialise with every other write of this user (a concurrent second
    -- refund of this usage waits here, then finds the first).
    PERFORM public._lock_user(v_usage.user_id);

    -- Refunded already: return the first refund, change nothing.
    SELECT t.* INTO v_prior FROM public.credit_transactions AS t WHERE t.refund_of = v_transaction_id;
    IF FOUND THEN
        SELECT b.balance INTO v_balance FROM public.credit_balances AS b WHERE b.user_id = v_usage.user_id;
        RETURN jsonb_build_object(
            'success', true, 'duplicate', true, 'refund_transaction_id', v_prior.id,
            'transaction_id', v_transaction_id, 'user_id', v_usage.user_id,
            'amount', v_prior.amount, 'balance', coalesce(v_balance, 0)
        );
    END IF;

    -- The refund entry: the usage's amount back, pointing at it.
    v_tx := public._append_credit_transaction(
        v_usage.user_id, -v_usage.amount, 'refund',
        coalesce(v_reason, format('Refund of transaction %s', v_transaction_id)),
        jsonb_build_object('refund_of', v_transaction_id, 'reason', v_reason),
        'refund:' || v_transaction_id, v_transaction_id
    );

    -- The activity log and the cache.
    INSERT INTO public.activity_log (user_id, activity_type, details)
    VALUES (
        v_usage.user_id, 'credits_refunded',
        jsonb_build_object(
            'transaction_id', v_transaction_id, 'refund_transaction_id', v_tx.id,
            'amount', v_tx.amount, 'reason', v_reason, 'balance', v_tx.balance_after
        )
    );
    PERFORM public._store_subscription_cache(v_usage.user_id, public._compute_subscription_state(v_usage.user_id));

    RETURN jsonb_build_object(
        'success', true, 'duplicate', false, 'refund_transaction_id', v_tx.id,
        'transaction_id', v_transaction_id, 'user_id', v_usage.user_id,
        'amount', v_tx.amount, 'balance', v_tx.balance_after
    );
END
$function$;

COMMENT ON FUNCTION public.refund_credits(bigint, text) IS
'Contract: refunds a usage entry at most once: appends a refund entry (amount = the credits used, refund_of = '
'transaction_id, idempotency_key refund:<id>, description = reason), logs credits_refunded and refreshes the '
'user''s cache row; allowed in any subscription state. Returns jsonb {success, duplicate, refund_transaction_id, '
'transaction_id, user_id, amount, balance}. A second refund of the same usage changes nothing and returns the first '
'refund with duplicate true and the current balance. Errors: 22023 when transaction_id is null; BD010 when no such '
'transaction exists; BD011 when it is not a usage (allocation, refund, adjustment or expiration).';

REVOKE ALL ON FUNCTION public.refund_credits(bigint, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.refund_credits(bigint, text) TO service_role;
