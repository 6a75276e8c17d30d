-- release_credit_hold v1 (revision 0005): the work failed, the held credits go back.
CREATE OR REPLACE FUNCTION public.release_credit_hold(hold_id bigint, reason text DEFAULT null)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_hold_id constant bigint := release_credit_hold.hold_id;
    v_reason constant text := nullif(btrim(release_credit_hold.reason), '');
    v_user_id text;
    v_hold public.credit_holds;
BEGIN
    -- A hold id is required.
    IF v_hold_id IS NULL THEN
        RAISE EXCEPTION 'release_credit_hold: hold_id is required (hold_id=NULL)'
            USING ERRCODE = '22023', HINT = 'Pass the hold_id returned by reserve_credits().';
    END IF;

    -- The hold's user, that user's lock, then the hold, locked (as commit_credit_hold).
    SELECT h.user_id INTO v_user_id FROM public.credit_holds AS h WHERE h.hold_id = v_hold_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'release_credit_hold: unknown credit hold (hold_id=%)', v_hold_id
            USING ERRCODE = 'BD070', HINT = 'Pass the hold_id returned by reserve_credits().';
    END IF;
    PERFORM public._lock_user(v_user_id);
    SELECT h.* INTO STRICT v_hold FROM public.credit_holds AS h WHERE h.hold_id = v_hold_id FOR UPDATE;

    -- Committed: its credits were spent; a refund goes through refund_credits.
    IF v_hold.status = 'committed' THEN
        RAISE EXCEPTION 'release_credit_hold: the hold is committed (hold_id=%, user_id=%, usage_transaction_id=%)',
            v_hold_id, v_user_id, v_hold.usage_transaction_id
            USING ERRCODE = 'BD071',
            HINT = 'Refund its usage entry with refund_credits(usage_transaction_id, reason).';
    END IF;

    -- Released or expired already: the first release, nothing given back again.
    IF v_hold.status <> 'held' THEN
        RETURN public._credit_hold_json(v_hold) || jsonb_build_object(
            'success', true, 'duplicate', true, 'transaction_id', v_hold.release_transaction_id,
            'balance', coalesce(
                (SELECT b.balance FROM public.credit_balances AS b WHERE b.user_id = v_user_id), 0
            )
        );
    END IF;

    -- Give the credits back.
    v_hold := public._release_credit_hold(v_hold_id, 'released', v_reason);

    RETURN public._credit_hold_json(v_hold) || jsonb_build_object(
        'success', true, 'duplicate', false, 'transaction_id', v_hold.release_transaction_id,
        'balance', (
            SELECT t.balance_after FROM public.credit_transactions AS t WHERE t.id = v_hold.release_transaction_id
        )
    );
END
$function$;

COMMENT ON FUNCTION public.release_credit_hold(bigint, text) IS
'Contract: gives a held credit hold''s credits back (the work failed or was abandoned): appends a release entry '
'(+amount, key hold:<hold_id>:release, metadata {hold_id, status, reason}), sets status released, reason and '
'settled_at, logs credit_hold_released and refreshes the user''s cache row; allowed in any subscription state and '
'after expires_at. Returns jsonb {success, duplicate, transaction_id (the release entry), balance} and the hold '
'(_credit_hold_json). Releasing a released or expired hold changes nothing and returns it with duplicate true and '
'the current balance. Errors: 22023 when hold_id is null; BD070 when no such hold exists; BD071 when the hold is '
'committed (refund its usage entry with refund_credits instead).';

REVOKE ALL ON FUNCTION public.release_credit_hold(bigint, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.release_credit_hold(bigint, text) TO service_role;
