-- _release_credit_hold v1 (revision 0005): give a hold's credits back, the one place that does.
CREATE OR REPLACE FUNCTION public._release_credit_hold(hold_id bigint, status text, reason text)
RETURNS public.credit_holds
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_hold_id constant bigint := _release_credit_hold.hold_id;
    v_status constant text := _release_credit_hold.status;
    v_reason constant text := _release_credit_hold.reason;
    v_hold public.credit_holds;
    v_tx public.credit_transactions;
BEGIN
    -- The hold, locked; the caller holds its user's lock and saw it held.
    SELECT h.* INTO STRICT v_hold FROM public.credit_holds AS h WHERE h.hold_id = v_hold_id FOR UPDATE;

    -- The credits back: a release entry of the held amount.
    v_tx := public._append_credit_transaction(
        v_hold.user_id, v_hold.amount, 'release',
        format('Hold %s %s%s', v_hold_id, v_status, coalesce(': ' || v_reason, '')),
        jsonb_build_object('hold_id', v_hold_id, 'status', v_status, 'reason', v_reason),
        format('hold:%s:release', v_hold_id), NULL
    );

    -- The hold is settled.
    UPDATE public.credit_holds AS h
    SET status = v_status, reason = v_reason, settled_at = now(), release_transaction_id = v_tx.id
    WHERE h.hold_id = v_hold_id
    RETURNING h.* INTO v_hold;

    -- The activity log and the cache (the balance changed).
    INSERT INTO public.activity_log (user_id, activity_type, details)
    VALUES (
        v_hold.user_id, 'credit_hold_' || v_status,
        jsonb_build_object(
            'hold_id', v_hold_id, 'amount', v_hold.amount, 'reason', v_reason,
            'transaction_id', v_tx.id, 'balance', v_tx.balance_after
        )
    );
    PERFORM public._store_subscription_cache(v_hold.user_id, public._compute_subscription_state(v_hold.user_id));

    RETURN v_hold;
END
$function$;

COMMENT ON FUNCTION public._release_credit_hold(bigint, text, text) IS
'Internal. Contract: settles a held credit hold as status (released or expired) with reason: appends a release entry '
'(+amount, key hold:<hold_id>:release, metadata {hold_id, status, reason}), sets status, reason, settled_at and '
'release_transaction_id, logs credit_hold_<status> in activity_log, refreshes the user''s cache row, and returns the '
'updated hold. The caller holds _lock_user(user_id) and checked that the hold is held.';

REVOKE ALL ON FUNCTION public._release_credit_hold(bigint, text, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._release_credit_hold(bigint, text, text) TO service_role;
