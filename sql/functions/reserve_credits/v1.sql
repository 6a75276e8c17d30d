-- reserve_credits v1 (revision 0005): take credits out of the spendable balance into a hold.
CREATE OR REPLACE FUNCTION public.reserve_credits(
    user_id text,
    amount integer,
    ttl interval DEFAULT '00:05:00'::interval,
    idempotency_key text DEFAULT null,
    description text DEFAULT null,
    metadata jsonb DEFAULT '{}'::jsonb
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := reserve_credits.user_id;
    v_amount constant integer := reserve_credits.amount;
    v_ttl constant interval := reserve_credits.ttl;
    v_key constant text := reserve_credits.idempotency_key;
    v_description constant text := coalesce(nullif(btrim(reserve_credits.description), ''), 'Credit hold');
    v_metadata constant jsonb := coalesce(reserve_credits.metadata, '{}'::jsonb);
    v_prior public.credit_holds;
    v_state jsonb;
    v_code text;
    v_hold_id bigint;
    v_tx public.credit_transactions;
    v_hold public.credit_holds;
BEGIN
    -- Arguments: a user, a positive amount, a ttl in (0, 1 day], a non-blank
    -- key when given, an object as metadata.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'reserve_credits: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;
    IF v_amount IS NULL OR v_amount <= 0 THEN
        RAISE EXCEPTION 'reserve_credits: amount must be a positive integer (user_id=%, amount=%)',
            v_user_id, coalesce(v_amount::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Hold at least 1 credit.';
    END IF;
    IF v_ttl IS NULL OR v_ttl <= '0'::interval OR v_ttl > '1 day'::interval THEN
        RAISE EXCEPTION 'reserve_credits: ttl must be more than 0 and at most 1 day (user_id=%, ttl=%)',
            v_user_id, coalesce(v_ttl::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'A hold lasts as long as the work it pays for, e.g. 5 minutes.';
    END IF;
    IF v_key IS NOT NULL AND btrim(v_key) = '' THEN
        RAISE EXCEPTION 'reserve_credits: idempotency_key is blank (user_id=%)', v_user_id
            USING ERRCODE = '22023', HINT = 'Pass null for no key.';
    END IF;
    IF jsonb_typeof(v_metadata) <> 'object' THEN
        RAISE EXCEPTION 'reserve_credits: metadata must be a JSON object (user_id=%, metadata=%)',
            v_user_id, left(v_metadata::text, 80)
            USING ERRCODE = '22023';
    END IF;

    -- Serialise with every other write of this user: a concurrent call with
    -- the same key waits here, then finds the first hold below.
    PERFORM public._lock_user(v_user_id);

    -- A key seen before: that hold as it is now (held, committed with its
    -- result, released or expired); nothing is held again.
    IF v_key IS NOT NULL THEN
        SELECT h.* INTO v_prior
        FROM public.credit_holds AS h
        WHERE h.user_id = v_user_id AND h.idempotency_key = v_key;
        IF FOUND THEN
            IF v_prior.amount <> v_amount THEN
                RAISE EXCEPTION 'reserve_credits: idempotency key already used for another amount '
                    '(idempotency_key=%, user_id=%, amount=%, first_hold_id=%, first_amount=%)',
                    quote_literal(v_key), v_user_id, v_amount, v_prior.hold_id, v_prior.amount
                    USING ERRCODE = 'BD012', HINT = 'Use a new key for a different call.';
            END IF;
            RETURN public._credit_hold_json(v_prior) || jsonb_build_object(
                'success', true, 'code', NULL,
                'message', format('Hold %s (replayed): %s', v_prior.hold_id, v_prior.status),
                'balance', coalesce(
                    (SELECT b.balance FROM public.credit_balances AS b WHERE b.user_id = v_user_id), 0
                ),
                'replayed', true
            );
        END IF;
    END IF;

    -- The spending rule, on the live state (as use_credits_validated).
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
            'hold_id', NULL, 'user_id', v_user_id, 'amount', v_amount, 'status', NULL,
            'balance', (v_state ->> 'credits_balance')::integer, 'replayed', false
        );
    END IF;

    -- Take the credits out of the balance: the hold entry (one conditional
    -- UPDATE of the balance, as every debit), under the hold's id.
    v_hold_id := nextval('public.credit_holds_hold_id_seq'::regclass);
    v_tx := public._append_credit_transaction(
        v_user_id, -v_amount, 'hold', v_description,
        v_metadata || jsonb_build_object('hold_id', v_hold_id),
        format('hold:%s', v_hold_id), NULL
    );
    IF v_tx.id IS NULL THEN
        RETURN jsonb_build_object(
            'success', false, 'code', 'insufficient_credits',
            'message', format(
                'Insufficient credits: balance %s, requested %s', v_state ->> 'credits_balance', v_amount
            ),
            'hold_id', NULL, 'user_id', v_user_id, 'amount', v_amount, 'status', NULL,
            'balance', (v_state ->> 'credits_balance')::integer, 'replayed', false
        );
    END IF;

    -- The hold row.
    INSERT INTO public.credit_holds AS h (
        hold_id, user_id, amount, idempotency_key, description, metadata, expires_at, hold_transaction_id
    )
    VALUES (v_hold_id, v_user_id, v_amount, v_key, v_description, v_metadata, now() + v_ttl, v_tx.id)
    RETURNING h.* INTO v_hold;

    -- Refresh the cache: the state above with the new balance (we hold the user's lock).
    PERFORM public._store_subscription_cache(
        v_user_id, v_state || jsonb_build_object('credits_balance', v_tx.balance_after)
    );

    RETURN public._credit_hold_json(v_hold) || jsonb_build_object(
        'success', true, 'code', NULL,
        'message', format('Held %s credits until %s', v_amount, v_hold.expires_at),
        'balance', v_tx.balance_after, 'replayed', false
    );
END
$function$;

COMMENT ON FUNCTION public.reserve_credits(text, integer, interval, text, text, jsonb) IS
'Contract: holds amount credits of user_id for ttl (default 5 minutes, at most 1 day) if the subscription state '
'allows spending and the spendable balance covers it: appends a hold entry (-amount, key hold:<hold_id>, metadata + '
'{hold_id}), inserts a credit_holds row (status held, expires_at = now() + ttl) and refreshes the user''s cache row; '
'held credits are out of the balance, so nothing else can spend them. Settle with commit_credit_hold(hold_id) or '
'release_credit_hold(hold_id); release_expired_credit_holds() releases it once expired. Returns jsonb {success, code, '
'message, balance, replayed} and the hold (_credit_hold_json: hold_id, user_id, amount, status, expires_at, ...). '
'code is null on success, else no_subscription | subscription_inactive | period_ended (the spending rule of '
'use_credits_validated) or insufficient_credits: a refusal changes nothing (hold_id null, balance = the current '
'balance). idempotency_key (optional, unique per user): a key already used by a hold of this user and amount returns '
'that hold as it is now (held, committed with its result, released or expired) with replayed true and holds '
'nothing; a refused call leaves no trace. Concurrent calls of a user are serialised by _lock_user, and the deduction '
'is one conditional UPDATE, so concurrent holds never overdraw. Errors: 22023 when user_id is null or blank, amount '
'is null or <= 0, ttl is null, <= 0 or > 1 day, the key is blank or metadata is not a JSON object; BD012 when the '
'key was used by this user for another amount.';

REVOKE ALL ON FUNCTION public.reserve_credits(text, integer, interval, text, text, jsonb)
FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.reserve_credits(text, integer, interval, text, text, jsonb) TO service_role;
