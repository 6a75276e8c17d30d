-- _spending_refusal v1 (revision 0002): the spending rule, in one place.
CREATE OR REPLACE FUNCTION public._spending_refusal(
    status text,
    cancel_at_period_end boolean,
    current_period_end timestamptz
)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_status constant text := _spending_refusal.status;
    v_cancel constant boolean := coalesce(_spending_refusal.cancel_at_period_end, false);
    v_period_end constant timestamptz := _spending_refusal.current_period_end;
BEGIN
    -- No subscription at all.
    IF v_status IS NULL THEN
        RETURN 'no_subscription';
    END IF;

    -- Never: before the first payment, after it expired, unpaid, paused.
    IF v_status IN ('incomplete', 'incomplete_expired', 'unpaid', 'paused') THEN
        RETURN 'subscription_inactive';
    END IF;

    -- past_due: a grace period while Stripe retries, unless the setting is off.
    IF v_status = 'past_due'
        AND coalesce(public._billing_setting('past_due_can_spend'), 'true') <> 'true' THEN
        RETURN 'subscription_inactive';
    END IF;

    -- Canceled, or ending at the period end: until the paid period is over.
    IF v_status = 'canceled' OR v_cancel THEN
        IF v_period_end IS NULL THEN
            -- A canceled subscription without a known period has nothing left;
            -- a running one set to cancel keeps its status' rule.
            RETURN CASE WHEN v_status = 'canceled' THEN 'subscription_inactive' END;
        END IF;
        IF v_period_end <= now() THEN
            RETURN 'period_ended';
        END IF;
    END IF;

    -- trialing, active, past_due (with grace), or canceled/ending before the period end.
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION public._spending_refusal(text, boolean, timestamptz) IS
'Internal: the spending rule (guide section 4). Contract: null when a subscription with this status, '
'cancel_at_period_end and current_period_end may spend credits now, else the reason: no_subscription (status null); '
'subscription_inactive (incomplete, incomplete_expired, unpaid, paused; past_due when the setting past_due_can_spend '
'is not true; canceled without a known period end); period_ended (canceled or cancel_at_period_end, and '
'current_period_end <= now()). trialing, active and past_due (grace on, the default) may spend; canceled and '
'cancel_at_period_end until current_period_end.';

REVOKE ALL ON FUNCTION public._spending_refusal(text, boolean, timestamptz) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._spending_refusal(text, boolean, timestamptz) TO service_role;
