-- _lock_user v1 (revision 0002).
CREATE OR REPLACE FUNCTION public._lock_user(user_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := _lock_user.user_id;
BEGIN
    -- Class 1111769685 ('BDBU') keeps these keys apart from other advisory locks;
    -- a hash collision only serialises two users, it never breaks anything.
    PERFORM pg_advisory_xact_lock(1111769685, hashtext(v_user_id));
END
$function$;

COMMENT ON FUNCTION public._lock_user(text) IS
'Internal. Contract: takes the exclusive transaction-level advisory lock of user_id (class 1111769685, key '
'hashtext(user_id)). Every function that writes a user''s billing state takes it first, before any row lock, and '
'holds it to commit: the writes of one user are serialised (so an idempotency key is checked after any earlier call '
'with it committed, and ledger ids are in commit order per user), and the user''s cache row is computed from '
'committed data only. A transaction that writes several users locks them one at a time; callers that need several '
'at once must lock them in sorted user_id order to avoid deadlocks.';

REVOKE ALL ON FUNCTION public._lock_user(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._lock_user(text) TO service_role;
