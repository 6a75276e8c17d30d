-- _apply_stripe_subscription_event v2 (revision 0009): the period comes from plain expressions when the
-- subscription carries it (before basil), and from one query over the items otherwise (v1: two queries,
-- one per bound, for every event of either shape). Same result.
CREATE OR REPLACE FUNCTION public._apply_stripe_subscription_event(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_event constant jsonb := _apply_stripe_subscription_event.event;
    v_sub constant jsonb := _apply_stripe_subscription_event.event #> '{data,object}';
    v_items jsonb;
    v_period_start timestamptz;
    v_period_end timestamptz;
    v_cancel boolean;
    v_change jsonb;
BEGIN
    -- The period, in either API shape: on the subscription before
    -- 2025-03-31.basil, on each item since (the items' span is the period:
    -- read them, in one query, only when the subscription does not say).
    v_items := CASE WHEN jsonb_typeof(v_sub #> '{items,data}') = 'array' THEN v_sub #> '{items,data}' END;
    v_period_start := to_timestamp((v_sub ->> 'current_period_start')::bigint);
    v_period_end := to_timestamp((v_sub ->> 'current_period_end')::bigint);
    IF (v_period_start IS NULL OR v_period_end IS NULL) AND v_items IS NOT NULL THEN
        SELECT
            coalesce(v_period_start, to_timestamp(min(
                CASE WHEN v_period_start IS NULL THEN (i.item ->> 'current_period_start')::bigint END
            ))),
            coalesce(v_period_end, to_timestamp(max(
                CASE WHEN v_period_end IS NULL THEN (i.item ->> 'current_period_end')::bigint END
            )))
        INTO v_period_start, v_period_end
        FROM jsonb_array_elements(v_items) AS i (item);
    END IF;

    -- Cancellation at the period end: the flag, or cancel_at set to the period end.
    v_cancel := coalesce((v_sub ->> 'cancel_at_period_end')::boolean, false)
        OR to_timestamp((v_sub ->> 'cancel_at')::bigint) = v_period_end;

    -- The state machine and the watermark (event created, event id) decide.
    v_change := public.apply_subscription_change(
        subscription_id => public._stripe_id(v_sub -> 'id'),
        user_id => NULL,
        customer_id => public._stripe_id(v_sub -> 'customer'),
        status => v_sub ->> 'status',
        price_id => coalesce(
            public._stripe_id(v_items #> '{0,price}'),
            public._stripe_id(v_items #> '{0,plan}'),
            public._stripe_id(v_sub -> 'plan')
        ),
        current_period_start => v_period_start,
        current_period_end => v_period_end,
        cancel_at_period_end => v_cancel,
        canceled_at => to_timestamp((v_sub ->> 'canceled_at')::bigint),
        event_created => to_timestamp((v_event ->> 'created')::bigint),
        event_id => v_event ->> 'id'
    );

    -- created, updated, unchanged: processed; stale or a refused transition: stale.
    RETURN jsonb_build_object(
        'status', CASE WHEN v_change ->> 'result' IN ('stale', 'refused_transition') THEN 'stale' ELSE 'processed' END,
        'detail', jsonb_build_object('action', 'subscription', 'subscription', v_change)
    );
END
$function$;

COMMENT ON FUNCTION public._apply_stripe_subscription_event(jsonb) IS
'Internal. Contract: applies a customer.subscription.* event (created, updated, deleted, paused, resumed) through '
'apply_subscription_change with the event''s created time and id as the watermark; reads the period from the '
'subscription (before 2025-03-31.basil) or from items.data[] (basil+); cancel_at_period_end is the flag or cancel_at '
'equal to the period end. Returns jsonb {status, detail}: status processed (created, updated, unchanged) or stale '
'(older than the watermark, or a same-second or refused transition); detail {action: subscription, subscription: '
'apply_subscription_change''s result}. The customer must be linked (the dispatcher parks it as pending otherwise). '
'Errors: those of apply_subscription_change (22023 malformed payload, BD001, BD004, BD013).';

REVOKE ALL ON FUNCTION public._apply_stripe_subscription_event(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._apply_stripe_subscription_event(jsonb) TO service_role;
