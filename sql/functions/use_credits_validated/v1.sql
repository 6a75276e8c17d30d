-- use_credits_validated v1 (revision 0002): spend credits, checked and race-free.
CREATE OR REPLACE FUNCTION public.use_credits_validated(
    user_id text,
    amount integer,
    description text DEFAULT null,
    metadata jsonb DEFAULT '{}'::jsonb,
    idempotency_key text DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := use_credits_validated.user_id;
    v_amount constant integer := use_credits_validated.amount;
    v_description constant text := coalesce(nullif(btrim(use_credits_validated.description), ''), 'Credit usage');
    v_metadata constant jsonb := coalesce(use_credits_validated.metadata, '{}'::jsonb);
    v_key constant text := use_credits_validated.idempotency_key;
    v_prior public.credit_transactions;
    v_state jsonb;
    v_code text;
    v_tx public.credit_transactions;
BEGIN
    -- Arguments: a user, a positive amount, an object as metadata, a non-blank key.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'use_credits_validated: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;
    IF v_amount IS NULL OR v_amount <= 0 THEN
        RAISE EXCEPTION 'use_credits_validated: amount must be a positive integer (user_id=%, amount=%)',
            v_user_id, coalesce(v_amount::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Spend at least 1 credit; refunds go through refund_credits().';
    END IF;
    IF jsonb_typeof(v_metadata) <> 'object' THEN
        RAISE EXCEPTION 'use_credits_validated: metadata must be a JSON object (user_id=%, metadata=%)',
            v_user_id, v_metadata
            USING ERRCODE = '22023';
    END IF;
    IF v_key IS NOT NULL AND btrim(v_key) = '' THEN
        RAISE EXCEPTION 'use_credits_validated: idempotency_key is blank (user_id=%)', v_user_id
            USING ERRCODE = '22023', HINT = 'Pass null for no key.';
    END IF;

    -- Serialise with every other write of this user. Idempotency rests on this
    -- lock: a concurrent call with the same key waits here until the first one
    -- commits and then finds its entry below; the unique index on
    -- idempotency_key is the backstop (BD012 from _append_credit_transaction).
    PERFORM public._lock_user(v_user_id);

    -- A key seen before: return the first result, deduct nothing.
    IF v_key IS NOT NULL THEN
        SELECT t.* INTO v_prior FROM public.credit_transactions AS t WHERE t.idempotency_key = v_key;
        IF FOUND THEN
            IF v_prior.user_id <> v_user_id OR v_prior.transaction_type <> 'usage' OR v_prior.amount <> -v_amount THEN
                RAISE EXCEPTION 'use_credits_validated: idempotency key already used for another call '
                    '(idempotency_key=%, user_id=%, amount=%, first_transaction_id=%)',
                    quote_literal(v_key), v_user_id, v_amount, v_prior.id
                    USING ERRCODE = 'BD012', HINT = 'Use a new key for a different call.';
            END IF;
            RETURN jsonb_build_object(
                'success', true, 'code', NULL,
                'message', format('Used %s credits (replayed)', v_amount),
                'user_id', v_user_id, 'transaction_id', v_prior.id, 'amount', v_amount,
                'balance', v_prior.balance_after, 'replayed', true
            );
        END IF;
    END IF;

    -- The spending rule, on the live state (no write of this user in flight).
    v_state := public._compute_subscription_state(v_user_id);
    v_code := v_state ->> 'reason';
    IF v_code IS NOT NULL THEN
        RETURN jsonb_build_object(
            'success', false, 'code', v_code,
            'message', CASE v_code
                WHEN 'no_subscription' THEN 'No subscription: credits cannot be used'
                WHEN 'period_ended' THEN format(
                    'The subscription period ended at %s: credits cannot be used', v_state ->> 'current_period_end'
                )
                ELSE format('Subscription status %s does not allow using credits', v_state ->> 'status')
            END,
            'user_id', v_user_id, 'transaction_id', NULL, 'amount', v_amount,
            'balance', (v_state ->> 'credits_balance')::integer, 'replayed', false
        );
    END IF;

    -- Deduct and record: one conditional UPDATE and the usage entry.
    v_tx := public._append_credit_transaction(
        v_user_id, -v_amount, 'usage', v_description, v_metadata, v_key, NULL
    );
    IF v_tx.id IS NULL THEN
        RETURN jsonb_build_object(
            'success', false, 'code', 'insufficient_credits',
            'message', format(
                'Insufficient credits: balance %s, requested %s', v_state ->> 'credits_balance', v_amount
            ),
            'user_id', v_user_id, 'transaction_id', NULL, 'amount', v_amount,
            'balance', (v_state ->> 'credits_balance')::integer, 'replayed', false
        );
    END IF;

    -- Refresh the cache: the state above with the new balance (we hold the
    -- user's lock, so nothing else of this user changed in between).
    PERFORM public._store_subscription_cache(
        v_user_id, v_state || jsonb_build_object('credits_balance', v_tx.balance_after)
    );

    RETURN jsonb_build_object(
        'success', true, 'code', NULL,
        'message', format('Used %s credits', v_amount),
        'user_id', v_user_id, 'transaction_id', v_tx.id, 'amount', v_amount,
        'balance', v_tx.balance_after, 'replayed', false
    );
END
$function$;

COMMENT ON FUNCTION public.use_credits_validated(text, integer, text, jsonb, text) IS
'Contract: spends amount credits of user_id if the subscription state allows it and the balance covers it; returns '
'jsonb {success, code, message, user_id, transaction_id, amount, balance, replayed}. code is null on success, else '
'no_subscription | subscription_inactive | period_ended (the spending rule: trialing, active, past_due while the '
'setting past_due_can_spend is true, canceled or cancel_at_period_end until current_period_end) or '
'insufficient_credits; a refusal changes nothing and balance is the current balance. On success one usage entry '
'(amount -amount, metadata, description) is appended, balance is the balance after it, and the user''s cache row is '
'refreshed. The deduction is one conditional UPDATE (balance >= amount), so concurrent callers never overdraw. '
'idempotency_key (optional): a key already used by a successful usage of the same user and amount returns that '
'first result (its transaction_id and balance after) with replayed true and deducts nothing; a refused call leaves '
'no trace, so a retry is evaluated anew. Concurrent calls with one key are serialised by the user''s advisory lock '
'(_lock_user): exactly one deducts. Errors: 22023 when user_id is null or blank, amount is null or <= 0, metadata '
'is not a JSON object or the key is blank; BD012 when the key was used for a different call (other user, kind or '
'amount).';

REVOKE ALL ON FUNCTION public.use_credits_validated(text, integer, text, jsonb, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.use_credits_validated(text, integer, text, jsonb, text) TO service_role;
