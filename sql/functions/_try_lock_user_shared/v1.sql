-- _try_lock_user_shared v1 (revision 0002).
CREATE OR REPLACE FUNCTION public._try_lock_user_shared(user_id text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := _try_lock_user_shared.user_id;
BEGIN
    -- The same key as _lock_user, in shared mode and without waiting.
    RETURN pg_try_advisory_xact_lock_shared(1111769685, hashtext(v_user_id));
END
$function$;

COMMENT ON FUNCTION public._try_lock_user_shared(text) IS
'Internal. Contract: tries, without waiting, to take user_id''s advisory lock (see _lock_user) in shared mode until '
'commit; true when taken. A cache miss stores its row only when it holds this lock: no write of the user is then in '
'flight, so the stored row cannot be older than the last committed change.';

REVOKE ALL ON FUNCTION public._try_lock_user_shared(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._try_lock_user_shared(text) TO service_role;
