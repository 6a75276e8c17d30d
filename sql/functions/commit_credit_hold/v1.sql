-- commit_credit_hold v1 (revision 0005): the work was done, the held credits are spent.
CREATE OR REPLACE FUNCTION public.commit_credit_hold(hold_id bigint, result jsonb DEFAULT null)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_hold_id constant bigint := commit_credit_hold.hold_id;
    v_result constant jsonb := commit_credit_hold.result;
    v_user_id text;
    v_hold public.credit_holds;
    v_release public.credit_transactions;
    v_usage public.credit_transactions;
BEGIN
    -- A hold id is required.
    IF v_hold_id IS NULL THEN
        RAISE EXCEPTION 'commit_credit_hold: hold_id is required (hold_id=NULL)'
            USING ERRCODE = '22023', HINT = 'Pass the hold_id returned by reserve_credits().';
    END IF;

    -- The hold's user, then that user's lock, then the hold itself, locked
    -- (the user's lock first, as every write; a concurrent commit, release or
    -- sweep of this hold waits here and then sees it settled).
    SELECT h.user_id INTO v_user_id FROM public.credit_holds AS h WHERE h.hold_id = v_hold_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'commit_credit_hold: unknown credit hold (hold_id=%)', v_hold_id
            USING ERRCODE = 'BD070', HINT = 'Pass the hold_id returned by reserve_credits().';
    END IF;
    PERFORM public._lock_user(v_user_id);
    SELECT h.* INTO STRICT v_hold FROM public.credit_holds AS h WHERE h.hold_id = v_hold_id FOR UPDATE;

    -- Committed already: the first commit, nothing spent again.
    IF v_hold.status = 'committed' THEN
        RETURN public._credit_hold_json(v_hold) || jsonb_build_object(
            'success', true, 'duplicate', true, 'transaction_id', v_hold.usage_transaction_id,
            'balance', coalesce(
                (SELECT b.balance FROM public.credit_balances AS b WHERE b.user_id = v_user_id), 0
            )
        );
    END IF;

    -- Released or expired: its credits are back in the balance; not spendable through it.
    IF v_hold.status <> 'held' THEN
        RAISE EXCEPTION 'commit_credit_hold: the hold is % (hold_id=%, user_id=%, settled_at=%)',
            v_hold.status, v_hold_id, v_user_id, v_hold.settled_at
            USING ERRCODE = 'BD071',
            HINT = 'Its credits were given back; reserve again (reserve_credits) or spend with use_credits_validated.';
    END IF;

    -- Spend: the held credits are released and used in one transaction (the
    -- usage cannot fail: the release just put the amount back).
    v_release := public._append_credit_transaction(
        v_user_id, v_hold.amount, 'release', format('Hold %s committed', v_hold_id),
        jsonb_build_object('hold_id', v_hold_id, 'status', 'committed'),
        format('hold:%s:release', v_hold_id), NULL
    );
    v_usage := public._append_credit_transaction(
        v_user_id, -v_hold.amount, 'usage', v_hold.description,
        v_hold.metadata || jsonb_build_object('hold_id', v_hold_id),
        format('hold:%s:usage', v_hold_id), NULL
    );

    -- The hold is settled, with the work's result. The cache row stays valid:
    -- the balance is what it was while the credits were held.
    UPDATE public.credit_holds AS h
    SET
        status = 'committed',
        result = v_result,
        settled_at = now(),
        release_transaction_id = v_release.id,
        usage_transaction_id = v_usage.id
    WHERE h.hold_id = v_hold_id
    RETURNING h.* INTO v_hold;

    RETURN public._credit_hold_json(v_hold) || jsonb_build_object(
        'success', true, 'duplicate', false, 'transaction_id', v_usage.id, 'balance', v_usage.balance_after
    );
END
$function$;

COMMENT ON FUNCTION public.commit_credit_hold(bigint, jsonb) IS
'Contract: spends a held credit hold: appends a release entry (+amount, key hold:<hold_id>:release) and a usage '
'entry (-amount, the hold''s description, its metadata + {hold_id}, key hold:<hold_id>:usage; refundable with '
'refund_credits) in one transaction, so the balance ends where the hold left it; sets status committed, '
'settled_at, result (the work''s output, returned to replays of reserve_credits with the same key). A hold past '
'expires_at that the sweep has not released yet can still be committed. Returns jsonb {success, duplicate, '
'transaction_id (the usage entry), balance} and the hold (_credit_hold_json). A second commit changes nothing and '
'returns the first with duplicate true and the current balance. Errors: 22023 when hold_id is null; BD070 when no '
'such hold exists; BD071 when the hold was released or expired (its credits are back in the balance).';

REVOKE ALL ON FUNCTION public.commit_credit_hold(bigint, jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.commit_credit_hold(bigint, jsonb) TO service_role;
