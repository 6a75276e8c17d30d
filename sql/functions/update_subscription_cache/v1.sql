-- update_subscription_cache v1 (revision 0002).
CREATE OR REPLACE FUNCTION public.update_subscription_cache(user_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := update_subscription_cache.user_id;
BEGIN
    -- A user id is required.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'update_subscription_cache: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;

    -- Wait for any write of this user to commit, then compute and store.
    PERFORM public._lock_user(v_user_id);
    RETURN public._store_subscription_cache(v_user_id, public._compute_subscription_state(v_user_id));
END
$function$;

COMMENT ON FUNCTION public.update_subscription_cache(text) IS
'Contract: recomputes user_id''s subscription state and stores it in subscription_cache (expires_at = now() + '
'cache_ttl_seconds, capped at current_period_end while the state may spend only until then); returns the state '
'as get_user_subscription_state does, with cached false. Does not count a hit or a miss. Takes the user''s lock '
'(_lock_user), so it waits for an in-flight write of the user. The state-changing functions refresh the row '
'themselves in their transaction. Errors: 22023 when user_id is null or blank.';

REVOKE ALL ON FUNCTION public.update_subscription_cache(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.update_subscription_cache(text) TO service_role;
