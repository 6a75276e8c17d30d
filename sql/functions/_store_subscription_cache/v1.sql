-- _store_subscription_cache v1 (revision 0002).
CREATE OR REPLACE FUNCTION public._store_subscription_cache(user_id text, state jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := _store_subscription_cache.user_id;
    v_state constant jsonb := _store_subscription_cache.state;
    v_ttl constant integer := coalesce(public._billing_setting('cache_ttl_seconds'), '300')::integer;
    v_period_end constant timestamptz := (v_state ->> 'current_period_end')::timestamptz;
    v_expires_at timestamptz := now() + make_interval(secs => v_ttl);
BEGIN
    -- A state that may spend only until the period end must not outlive it.
    IF (v_state ->> 'can_use_credits')::boolean
        AND (v_state ->> 'status' = 'canceled' OR (v_state ->> 'cancel_at_period_end')::boolean)
        AND v_period_end > now() THEN
        v_expires_at := least(v_expires_at, v_period_end);
    END IF;

    -- Upsert the user's row: the columns the runbook reads, and the state.
    INSERT INTO public.subscription_cache AS c (
        user_id, stripe_customer_id, subscription_id, status, price_id, plan_name,
        credits_balance, current_period_end, cancel_at_period_end, can_use_credits,
        state, cached_at, expires_at
    )
    VALUES (
        v_user_id,
        v_state ->> 'stripe_customer_id',
        v_state ->> 'subscription_id',
        v_state ->> 'status',
        v_state ->> 'price_id',
        v_state ->> 'plan',
        (v_state ->> 'credits_balance')::integer,
        v_period_end,
        coalesce((v_state ->> 'cancel_at_period_end')::boolean, false),
        coalesce((v_state ->> 'can_use_credits')::boolean, false),
        v_state,
        now(),
        v_expires_at
    )
    ON CONFLICT ON CONSTRAINT subscription_cache_pkey DO UPDATE
    SET
        stripe_customer_id = excluded.stripe_customer_id,
        subscription_id = excluded.subscription_id,
        status = excluded.status,
        price_id = excluded.price_id,
        plan_name = excluded.plan_name,
        credits_balance = excluded.credits_balance,
        current_period_end = excluded.current_period_end,
        cancel_at_period_end = excluded.cancel_at_period_end,
        can_use_credits = excluded.can_use_credits,
        state = excluded.state,
        cached_at = excluded.cached_at,
        expires_at = excluded.expires_at;

    RETURN v_state || jsonb_build_object(
        'cached', false, 'cached_at', now(), 'expires_at', v_expires_at
    );
END
$function$;

COMMENT ON FUNCTION public._store_subscription_cache(text, jsonb) IS
'Internal. Contract: upserts user_id''s subscription_cache row from a state computed by _compute_subscription_state '
'(cached_at = now(), expires_at = now() + cache_ttl_seconds, but not after current_period_end when the state may '
'spend only until then) and returns the state with cached false, cached_at and expires_at. The caller holds the '
'user''s lock (_lock_user, or _try_lock_user on a cache miss) and computed the state after taking it.';

REVOKE ALL ON FUNCTION public._store_subscription_cache(text, jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._store_subscription_cache(text, jsonb) TO service_role;
