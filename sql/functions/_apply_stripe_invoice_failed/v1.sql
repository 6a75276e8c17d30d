-- _apply_stripe_invoice_failed v1 (revision 0003).
CREATE OR REPLACE FUNCTION public._apply_stripe_invoice_failed(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_event constant jsonb := _apply_stripe_invoice_failed.event;
    v_invoice constant jsonb := _apply_stripe_invoice_failed.event #> '{data,object}';
    v_refs constant jsonb := public._stripe_event_refs(_apply_stripe_invoice_failed.event);
    v_created constant timestamptz := to_timestamp((_apply_stripe_invoice_failed.event ->> 'created')::bigint);
    v_user_id text;
    v_sub public.subscriptions;
    v_change jsonb;
    v_status text := 'processed';
BEGIN
    -- Only subscription invoices change a subscription.
    IF v_refs ->> 'subscription_id' IS NULL THEN
        RETURN jsonb_build_object(
            'status', 'ignored',
            'detail', jsonb_build_object('reason', 'not a subscription invoice', 'invoice_id', v_refs ->> 'object_id')
        );
    END IF;
    SELECT c.user_id INTO STRICT v_user_id
    FROM public.stripe_customers AS c
    WHERE c.stripe_customer_id = v_refs ->> 'customer_id';

    -- The subscription goes past_due, unless a newer event already moved it
    -- (its watermark is after this event): then this failure is stale. The
    -- event is not a full snapshot of the subscription, so it is applied as an
    -- authoritative change (the watermark stays with the subscription events).
    SELECT s.* INTO v_sub
    FROM public.subscriptions AS s
    WHERE s.subscription_id = v_refs ->> 'subscription_id';
    IF NOT FOUND THEN
        v_change := NULL;
    ELSIF v_sub.last_event_created > v_created THEN
        v_status := 'stale';
        v_change := jsonb_build_object(
            'applied', false, 'result', 'stale', 'from_status', v_sub.status, 'to_status', 'past_due',
            'subscription_id', v_sub.subscription_id, 'user_id', v_sub.user_id
        );
    ELSE
        v_change := public.apply_subscription_change(
            subscription_id => v_sub.subscription_id,
            user_id => v_sub.user_id,
            customer_id => v_refs ->> 'customer_id',
            status => 'past_due',
            price_id => v_sub.price_id,
            current_period_start => v_sub.current_period_start,
            current_period_end => v_sub.current_period_end,
            cancel_at_period_end => v_sub.cancel_at_period_end,
            canceled_at => v_sub.canceled_at
        );
        IF v_change ->> 'result' IN ('stale', 'refused_transition') THEN
            v_status := 'stale';
        END IF;
    END IF;

    -- The failure is logged in every case, for support.
    INSERT INTO public.activity_log (user_id, activity_type, details)
    VALUES (
        v_user_id, 'payment_failed',
        jsonb_build_object(
            'invoice_id', v_refs ->> 'object_id',
            'subscription_id', v_refs ->> 'subscription_id',
            'customer_id', v_refs ->> 'customer_id',
            'billing_reason', v_invoice ->> 'billing_reason',
            'amount_due', v_invoice -> 'amount_due',
            'attempt_count', v_invoice -> 'attempt_count',
            'next_payment_attempt', v_invoice -> 'next_payment_attempt',
            'stripe_event_id', v_event ->> 'id',
            'subscription_change', v_change
        )
    );

    RETURN jsonb_build_object(
        'status', v_status,
        'detail', jsonb_build_object(
            'action', 'payment_failed',
            'invoice_id', v_refs ->> 'object_id',
            'subscription_id', v_refs ->> 'subscription_id',
            'subscription', v_change
        )
    );
END
$function$;

COMMENT ON FUNCTION public._apply_stripe_invoice_failed(jsonb) IS
'Internal. Contract: invoice.payment_failed: moves the invoice''s subscription to past_due through '
'apply_subscription_change (as an authoritative change: the event is not a subscription snapshot, so the '
'subscription''s watermark is kept) unless the subscription''s watermark is newer than the event (stale), and logs '
'payment_failed in activity_log (invoice, subscription, attempt_count, next_payment_attempt, the change). A '
'subscription not yet known is left to its own events (they carry past_due). Returns jsonb {status, detail}: '
'processed or stale with detail {action: payment_failed, invoice_id, subscription_id, subscription: the change or '
'null}; ignored for an invoice without a subscription. The customer must be linked. Errors: those of '
'apply_subscription_change.';

REVOKE ALL ON FUNCTION public._apply_stripe_invoice_failed(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._apply_stripe_invoice_failed(jsonb) TO service_role;
