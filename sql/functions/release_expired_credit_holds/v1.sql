-- release_expired_credit_holds v1 (revision 0005): the sweep that returns abandoned holds.
CREATE OR REPLACE FUNCTION public.release_expired_credit_holds(max_holds integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_max constant integer := release_expired_credit_holds.max_holds;
    v_candidate record;
    v_status text;
    v_released integer := 0;
BEGIN
    -- A positive batch size.
    IF v_max IS NULL OR v_max <= 0 THEN
        RAISE EXCEPTION 'release_expired_credit_holds: max_holds must be a positive integer (max_holds=%)',
            coalesce(v_max::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'The default, 1000, suits a run every minute.';
    END IF;

    -- The oldest expired holds, taken in user order: each user's lock is taken
    -- before that user's hold rows, and users in sorted order, so two sweeps
    -- (or a sweep and a user's own calls) cannot deadlock.
    FOR v_candidate IN
        SELECT e.hold_id, e.user_id
        FROM (
            SELECT h.hold_id, h.user_id
            FROM public.credit_holds AS h
            WHERE h.status = 'held' AND h.expires_at <= now()
            ORDER BY h.expires_at, h.hold_id
            LIMIT v_max
        ) AS e
        ORDER BY e.user_id, e.hold_id
    LOOP
        PERFORM public._lock_user(v_candidate.user_id);

        -- Settled meanwhile (committed or released before we got the lock): skip.
        SELECT h.status INTO v_status
        FROM public.credit_holds AS h
        WHERE h.hold_id = v_candidate.hold_id
        FOR UPDATE;
        CONTINUE WHEN v_status <> 'held';

        PERFORM public._release_credit_hold(v_candidate.hold_id, 'expired', 'expired');
        v_released := v_released + 1;
    END LOOP;

    RETURN v_released;
END
$function$;

COMMENT ON FUNCTION public.release_expired_credit_holds(integer) IS
'Contract: releases up to max_holds (default 1000) held credit holds whose expires_at has passed, oldest first: '
'each gets a release entry (+amount), status expired, reason expired, a credit_hold_expired activity and a refreshed '
'cache row (as _release_credit_hold); returns how many. Holds settled concurrently are skipped. Safe to run '
'concurrently with itself and with the users'' calls (user locks in sorted order). Scheduled in pg_cron as '
'credit_holds_release (every minute) and run by `billingdb maintenance run`. Errors: 22023 when max_holds is null or '
'<= 0.';

REVOKE ALL ON FUNCTION public.release_expired_credit_holds(integer) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.release_expired_credit_holds(integer) TO service_role;
