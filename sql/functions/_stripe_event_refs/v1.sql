-- _stripe_event_refs v1 (revision 0003).
CREATE OR REPLACE FUNCTION public._stripe_event_refs(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_object constant jsonb := _stripe_event_refs.event #> '{data,object}';
    v_kind constant text := v_object ->> 'object';
    v_customer text;
    v_subscription text;
BEGIN
    -- The customer: the object's customer field, or the object itself.
    v_customer := CASE
        WHEN v_kind = 'customer' THEN public._stripe_id(v_object -> 'id')
        ELSE public._stripe_id(v_object -> 'customer')
    END;

    -- The subscription, in either API shape: the object itself; a basil+
    -- invoice's parent.subscription_details; an older invoice's or a checkout
    -- session's subscription field; else the first invoice line's.
    v_subscription := CASE
        WHEN v_kind = 'subscription' THEN public._stripe_id(v_object -> 'id')
        ELSE coalesce(
            public._stripe_id(v_object #> '{parent,subscription_details,subscription}'),
            public._stripe_id(v_object -> 'subscription'),
            public._stripe_id(v_object #> '{lines,data,0,parent,subscription_item_details,subscription}'),
            public._stripe_id(v_object #> '{lines,data,0,subscription}')
        )
    END;

    RETURN jsonb_build_object(
        'object_id', public._stripe_id(v_object -> 'id'),
        'customer_id', v_customer,
        'subscription_id', v_subscription
    );
END
$function$;

COMMENT ON FUNCTION public._stripe_event_refs(jsonb) IS
'Internal. Contract: the ids an event refers to, read from data.object in either Stripe API shape: jsonb '
'{object_id, customer_id, subscription_id} (each null when absent). subscription_id: the subscription itself, '
'invoice.parent.subscription_details.subscription (2025-03-31.basil and later), invoice.subscription or '
'checkout.session.subscription (older), else the first line''s subscription. Never raises.';

REVOKE ALL ON FUNCTION public._stripe_event_refs(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._stripe_event_refs(jsonb) TO service_role;
