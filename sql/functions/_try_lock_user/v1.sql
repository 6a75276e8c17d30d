-- _try_lock_user v1 (revision 0002).
CREATE OR REPLACE FUNCTION public._try_lock_user(user_id text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := _try_lock_user.user_id;
BEGIN
    -- The same key as _lock_user, without waiting. Exclusive, not shared: a
    -- transaction that reads (miss) and then writes the same user must not hold
    -- a shared lock that a concurrent twin's write waits on (deadlock, 40P01).
    RETURN pg_try_advisory_xact_lock(1111769685, hashtext(v_user_id));
END
$function$;

COMMENT ON FUNCTION public._try_lock_user(text) IS
'Internal. Contract: tries, without waiting, to take user_id''s exclusive advisory lock (see _lock_user) until '
'commit; true when taken (also when this transaction already holds it). A cache miss stores its row only when '
'it holds this lock: no write of the user is then in flight, so the stored row cannot be older than the last '
'committed change.';

REVOKE ALL ON FUNCTION public._try_lock_user(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._try_lock_user(text) TO service_role;
