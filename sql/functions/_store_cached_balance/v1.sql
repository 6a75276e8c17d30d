-- _store_cached_balance v1 (revision 0006).
CREATE OR REPLACE FUNCTION public._store_cached_balance(user_id text, balance integer)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := _store_cached_balance.user_id;
    v_balance constant integer := _store_cached_balance.balance;
BEGIN
    -- Only the balance changed: the row keeps its subscription part, its
    -- cached_at and its expires_at (no indexed column changes: a HOT update).
    UPDATE public.subscription_cache AS c
    SET
        credits_balance = v_balance,
        state = c.state || jsonb_build_object('credits_balance', v_balance)
    WHERE c.user_id = v_user_id;
END
$function$;

COMMENT ON FUNCTION public._store_cached_balance(text, integer) IS
'Internal. Contract: after a ledger write that changed only user_id''s balance (not a subscription), sets '
'credits_balance to balance in the user''s subscription_cache row, in the column and in state, when such a row '
'exists; cached_at, expires_at and the subscription part stay as they are (the balance is the only part of the '
'state that depends on the ledger). No row: nothing to do (the next read computes the state). The caller holds '
'_lock_user(user_id).';

REVOKE ALL ON FUNCTION public._store_cached_balance(text, integer) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._store_cached_balance(text, integer) TO service_role;
