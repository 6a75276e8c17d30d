-- _compute_subscription_state v1 (revision 0002).
CREATE OR REPLACE FUNCTION public._compute_subscription_state(user_id text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := _compute_subscription_state.user_id;
    v_sub record;
    v_balance integer;
    v_customer_id text;
BEGIN
    -- The user's current subscription: first one that may spend now, then one
    -- that is not terminal, then the latest period end, the latest update.
    SELECT
        s.subscription_id,
        s.stripe_customer_id,
        s.status,
        s.price_id,
        s.current_period_end,
        s.cancel_at_period_end,
        p.name AS plan_name,
        r.refusal
    INTO v_sub
    FROM public.subscriptions AS s
    LEFT JOIN public.plans AS p ON p.price_id = s.price_id
    CROSS JOIN LATERAL (
        SELECT public._spending_refusal(s.status, s.cancel_at_period_end, s.current_period_end) AS refusal
    ) AS r
    WHERE s.user_id = v_user_id
    ORDER BY
        (r.refusal IS NULL) DESC,
        (s.status NOT IN ('canceled', 'incomplete_expired')) DESC,
        s.current_period_end DESC NULLS LAST,
        s.updated_at DESC,
        s.subscription_id ASC
    LIMIT 1;

    -- The balance (0 without a balance row).
    SELECT b.balance INTO v_balance FROM public.credit_balances AS b WHERE b.user_id = v_user_id;

    -- The Stripe customer: the subscription's, else the user's mapping.
    v_customer_id := v_sub.stripe_customer_id;
    IF v_customer_id IS NULL THEN
        SELECT c.stripe_customer_id INTO v_customer_id
        FROM public.stripe_customers AS c
        WHERE c.user_id = v_user_id;
    END IF;

    RETURN jsonb_build_object(
        'user_id', v_user_id,
        'subscription_id', v_sub.subscription_id,
        'stripe_customer_id', v_customer_id,
        'status', v_sub.status,
        'plan', v_sub.plan_name,
        'price_id', v_sub.price_id,
        'credits_balance', coalesce(v_balance, 0),
        'current_period_end', v_sub.current_period_end,
        'cancel_at_period_end', coalesce(v_sub.cancel_at_period_end, false),
        'can_use_credits', v_sub.subscription_id IS NOT NULL AND v_sub.refusal IS NULL,
        'reason', CASE WHEN v_sub.subscription_id IS NULL THEN 'no_subscription' ELSE v_sub.refusal END
    );
END
$function$;

COMMENT ON FUNCTION public._compute_subscription_state(text) IS
'Internal. Contract: the live subscription state of user_id as jsonb {user_id, subscription_id, stripe_customer_id, '
'status, plan, price_id, credits_balance, current_period_end, cancel_at_period_end, can_use_credits, reason}, '
'without the cache keys. The current subscription is the best of the user''s: one that may spend now '
'(_spending_refusal is null) first, then one not canceled/incomplete_expired, then the latest current_period_end, the '
'latest updated_at, the smallest subscription_id. No subscription: status, plan, price_id null, can_use_credits '
'false, reason no_subscription; credits_balance is 0 without a balance row.';

REVOKE ALL ON FUNCTION public._compute_subscription_state(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._compute_subscription_state(text) TO service_role;
