-- _apply_stripe_checkout_completed v1 (revision 0003).
CREATE OR REPLACE FUNCTION public._apply_stripe_checkout_completed(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_event constant jsonb := _apply_stripe_checkout_completed.event;
    v_session constant jsonb := _apply_stripe_checkout_completed.event #> '{data,object}';
    v_customer_id constant text := public._stripe_id(_apply_stripe_checkout_completed.event #> '{data,object,customer}');
    v_subscription_id constant text := public._stripe_id(
        _apply_stripe_checkout_completed.event #> '{data,object,subscription}'
    );
    v_user_id text;
    v_linked_user text;
    v_link jsonb;
    v_waiting text[];
    v_applied jsonb;
BEGIN
    -- Nothing to link without a customer (a guest payment).
    IF v_customer_id IS NULL THEN
        RETURN jsonb_build_object(
            'status', 'ignored',
            'detail', jsonb_build_object('reason', 'checkout session without a customer', 'session_id', v_session ->> 'id')
        );
    END IF;

    -- The user: client_reference_id, else metadata.user_id; without one the
    -- session can only confirm a link made elsewhere.
    v_user_id := nullif(btrim(coalesce(v_session ->> 'client_reference_id', v_session #>> '{metadata,user_id}')), '');
    SELECT c.user_id INTO v_linked_user FROM public.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id;
    IF v_user_id IS NULL AND v_linked_user IS NULL THEN
        RETURN jsonb_build_object(
            'status', 'pending',
            'detail', jsonb_build_object(
                'reason', 'customer not linked to a user and the session names none', 'customer_id', v_customer_id
            )
        );
    END IF;

    -- The events waiting for this customer, to report what the link applies.
    SELECT coalesce(array_agg(e.stripe_event_id ORDER BY e.event_created, e.stripe_event_id), '{}')
    INTO v_waiting
    FROM public.stripe_events AS e
    WHERE e.customer_id = v_customer_id AND e.status = 'pending' AND e.stripe_event_id <> v_event ->> 'id';

    -- user <-> customer (BD004 when either is linked elsewhere). The trigger
    -- on stripe_customers applies the waiting events, in order.
    v_link := public.link_stripe_customer(coalesce(v_user_id, v_linked_user), v_customer_id);

    SELECT coalesce(jsonb_agg(
        jsonb_build_object('event_id', e.stripe_event_id, 'status', e.status)
        ORDER BY e.event_created, e.stripe_event_id
    ), '[]'::jsonb)
    INTO v_applied
    FROM public.stripe_events AS e
    WHERE e.stripe_event_id = ANY(v_waiting);

    -- customer <-> subscription is held by the subscription's own events (its
    -- user comes from this link); the session's subscription is logged here.
    INSERT INTO public.activity_log (user_id, activity_type, details)
    VALUES (
        v_link ->> 'user_id', 'checkout_completed',
        jsonb_build_object(
            'session_id', v_session ->> 'id',
            'customer_id', v_customer_id,
            'subscription_id', v_subscription_id,
            'mode', v_session ->> 'mode',
            'stripe_event_id', v_event ->> 'id',
            'applied_pending', v_applied
        )
    );

    RETURN jsonb_build_object(
        'status', 'processed',
        'detail', jsonb_build_object(
            'action', 'link',
            'user_id', v_link ->> 'user_id',
            'customer_id', v_customer_id,
            'subscription_id', v_subscription_id,
            'applied_pending', v_applied
        )
    );
END
$function$;

COMMENT ON FUNCTION public._apply_stripe_checkout_completed(jsonb) IS
'Internal. Contract: checkout.session.completed: links the session''s user (client_reference_id, else '
'metadata.user_id) to its customer with link_stripe_customer; the link applies the customer''s pending events in '
'order (trigger stripe_customers_apply_pending_events); logs checkout_completed (session, customer, subscription). '
'Returns jsonb {status, detail}: processed with detail {action: link, user_id, customer_id, subscription_id, '
'applied_pending: [{event_id, status}]}; pending when neither the session nor stripe_customers names the user; '
'ignored without a customer. Errors: BD004 when the user or the customer is linked elsewhere; 22023 from '
'link_stripe_customer.';

REVOKE ALL ON FUNCTION public._apply_stripe_checkout_completed(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._apply_stripe_checkout_completed(jsonb) TO service_role;
