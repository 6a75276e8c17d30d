-- grant_credits v1 (revision 0002): a manual adjustment by an operator.
CREATE OR REPLACE FUNCTION public.grant_credits(
    user_id text,
    amount integer,
    reason text,
    idempotency_key text DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := grant_credits.user_id;
    v_amount constant integer := grant_credits.amount;
    v_reason constant text := nullif(btrim(grant_credits.reason), '');
    v_key constant text := grant_credits.idempotency_key;
    v_prior public.credit_transactions;
    v_balance integer;
    v_tx public.credit_transactions;
BEGIN
    -- Arguments: a user, a non-zero amount, a non-blank key.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'grant_credits: user_id is required (user_id=%)', coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;
    IF v_amount IS NULL OR v_amount = 0 THEN
        RAISE EXCEPTION 'grant_credits: amount must be a non-zero integer (user_id=%, amount=%)',
            v_user_id, coalesce(v_amount::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Positive adds credits, negative removes them.';
    END IF;
    IF v_key IS NOT NULL AND btrim(v_key) = '' THEN
        RAISE EXCEPTION 'grant_credits: idempotency_key is blank (user_id=%)', v_user_id
            USING ERRCODE = '22023', HINT = 'Pass null for no key.';
    END IF;

    -- Serialise with every other write of this user (see use_credits_validated).
    PERFORM public._lock_user(v_user_id);

    -- A key seen before: return the first result, change nothing.
    IF v_key IS NOT NULL THEN
        SELECT t.* INTO v_prior FROM public.credit_transactions AS t WHERE t.idempotency_key = v_key;
        IF FOUND THEN
            IF v_prior.user_id <> v_user_id OR v_prior.transaction_type <> 'adjustment'
                OR v_prior.amount <> v_amount THEN
                RAISE EXCEPTION 'grant_credits: idempotency key already used for another call '
                    '(idempotency_key=%, user_id=%, amount=%, first_transaction_id=%)',
                    quote_literal(v_key), v_user_id, v_amount, v_prior.id
                    USING ERRCODE = 'BD012', HINT = 'Use a new key for a different call.';
            END IF;
            RETURN jsonb_build_object(
                'success', true, 'code', NULL, 'message', format('Adjusted by %s credits (replayed)', v_amount),
                'user_id', v_user_id, 'transaction_id', v_prior.id, 'amount', v_amount,
                'balance', v_prior.balance_after, 'replayed', true
            );
        END IF;
    END IF;

    -- The adjustment; a negative one never takes the balance below zero.
    v_tx := public._append_credit_transaction(
        v_user_id, v_amount, 'adjustment', coalesce(v_reason, 'Manual adjustment'),
        jsonb_build_object('reason', v_reason), v_key, NULL
    );
    IF v_tx.id IS NULL THEN
        SELECT b.balance INTO v_balance FROM public.credit_balances AS b WHERE b.user_id = v_user_id;
        RETURN jsonb_build_object(
            'success', false, 'code', 'insufficient_credits',
            'message', format('Insufficient credits: balance %s, adjustment %s', coalesce(v_balance, 0), v_amount),
            'user_id', v_user_id, 'transaction_id', NULL, 'amount', v_amount,
            'balance', coalesce(v_balance, 0), 'replayed', false
        );
    END IF;

    -- The activity log and the cache.
    INSERT INTO public.activity_log (user_id, activity_type, details)
    VALUES (
        v_user_id, 'credits_granted',
        jsonb_build_object(
            'amount', v_amount, 'reason', v_reason, 'transaction_id', v_tx.id, 'balance', v_tx.balance_after
        )
    );
    PERFORM public._store_subscription_cache(v_user_id, public._compute_subscription_state(v_user_id));

    RETURN jsonb_build_object(
        'success', true, 'code', NULL, 'message', format('Adjusted by %s credits', v_amount),
        'user_id', v_user_id, 'transaction_id', v_tx.id, 'amount', v_amount,
        'balance', v_tx.balance_after, 'replayed', false
    );
END
$function$;

COMMENT ON FUNCTION public.grant_credits(text, integer, text, text) IS
'Contract: a manual adjustment of user_id''s credits by amount (positive adds, creating the balance row if missing; '
'negative removes), in any subscription state; appends an adjustment entry (description = reason, metadata '
'{reason}), logs credits_granted and refreshes the user''s cache row. Returns jsonb {success, code, message, user_id, '
'transaction_id, amount, balance, replayed}. A negative amount beyond the balance is refused: success false, code '
'insufficient_credits, nothing changed, balance = the current balance. idempotency_key (optional): a key already '
'used by an adjustment of the same user and amount returns that first result (balance after it) with replayed true. '
'Errors: 22023 when user_id is null or blank, amount is null or 0, or the key is blank; BD012 when the key was used '
'for a different call.';

REVOKE ALL ON FUNCTION public.grant_credits(text, integer, text, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.grant_credits(text, integer, text, text) TO service_role;
