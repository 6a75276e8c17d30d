-- get_user_subscription_state v1 (revision 0002): the cached read path.
CREATE OR REPLACE FUNCTION public.get_user_subscription_state(user_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := get_user_subscription_state.user_id;
    v_hit record;
    v_state jsonb;
BEGIN
    -- A user id is required.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'get_user_subscription_state: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;

    -- Hit: a valid cache row; count it (nextval: lock-free, not transactional).
    SELECT c.state, c.cached_at, c.expires_at INTO v_hit
    FROM public.subscription_cache AS c
    WHERE c.user_id = v_user_id AND c.expires_at > now();
    IF FOUND THEN
        PERFORM nextval('public.subscription_cache_hits'::regclass);
        RETURN v_hit.state || jsonb_build_object(
            'cached', true, 'cached_at', v_hit.cached_at, 'expires_at', v_hit.expires_at
        );
    END IF;

    -- Miss: count it, then compute and store, but only while no write of this
    -- user is in flight (the user's exclusive lock, tried without waiting, before
    -- computing; a shared lock would deadlock a read-then-spend transaction
    -- against its concurrent twin); otherwise that write refreshes the row
    -- itself and we return the computed state unstored.
    PERFORM nextval('public.subscription_cache_misses'::regclass);
    IF public._try_lock_user(v_user_id) THEN
        RETURN public._store_subscription_cache(v_user_id, public._compute_subscription_state(v_user_id));
    END IF;
    v_state := public._compute_subscription_state(v_user_id);
    RETURN v_state || jsonb_build_object('cached', false, 'cached_at', NULL, 'expires_at', NULL);
END
$function$;

COMMENT ON FUNCTION public.get_user_subscription_state(text) IS
'Contract: the subscription state of user_id as jsonb {user_id, subscription_id, stripe_customer_id, status, plan, '
'price_id, credits_balance, current_period_end, cancel_at_period_end, can_use_credits, reason, cached, cached_at, '
'expires_at}. reason is null when can_use_credits, else no_subscription | subscription_inactive | period_ended; '
'can_use_credits is about the subscription, not the balance. An unknown user gets a well-formed state: status, '
'plan, price_id null, credits_balance 0 (or the balance of granted credits), can_use_credits false, reason '
'no_subscription. Hit (subscription_cache row with expires_at > now()): that row''s state, cached true, counted in '
'sequence subscription_cache_hits. Miss: computed live (the current subscription is chosen as in '
'_compute_subscription_state), stored with expires_at = now() + cache_ttl_seconds (not after current_period_end '
'while the state may spend only until then), cached false, counted in subscription_cache_misses; while a write of '
'the user is in flight the state is returned unstored (cached_at and expires_at null). Every write of a user '
'refreshes the row in its transaction, so a hit is never older than the last committed change (exception: a '
'set_plan rename racing a miss may show the old plan name until the row expires). Errors: 22023 when user_id is '
'null or blank.';

REVOKE ALL ON FUNCTION public.get_user_subscription_state(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_user_subscription_state(text) TO service_role;
