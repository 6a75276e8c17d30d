-- _stripe_event_refs v2 (revision 0006): one SQL expression, inlined by the planner into its
-- callers (v1 was PL/pgSQL with SECURITY DEFINER and SET search_path, called two or three times
-- per webhook event). Same result. It touches no table, so definer rights give it nothing.
CREATE OR REPLACE FUNCTION public._stripe_event_refs(event jsonb)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
SECURITY INVOKER
AS $function$
    -- Read from data.object. The customer: the object's customer field, or
    -- the object itself. The subscription, in either API shape: the object
    -- itself; a basil+ invoice's parent.subscription_details; an older
    -- invoice's or a checkout session's subscription field; else the first
    -- invoice line's (basil+, then older).
    SELECT pg_catalog.jsonb_build_object(
        'object_id', public._stripe_id(event #> '{data,object,id}'),
        'customer_id', CASE
            WHEN event #>> '{data,object,object}' = 'customer' THEN public._stripe_id(event #> '{data,object,id}')
            ELSE public._stripe_id(event #> '{data,object,customer}')
        END,
        'subscription_id', CASE
            WHEN event #>> '{data,object,object}' = 'subscription' THEN public._stripe_id(event #> '{data,object,id}')
            ELSE coalesce(
                public._stripe_id(event #> '{data,object,parent,subscription_details,subscription}'),
                public._stripe_id(event #> '{data,object,subscription}'),
                public._stripe_id(event #> '{data,object,lines,data,0,parent,subscription_item_details,subscription}'),
                public._stripe_id(event #> '{data,object,lines,data,0,subscription}')
            )
        END
    )
$function$;

COMMENT ON FUNCTION public._stripe_event_refs(jsonb) IS
'Internal, pure (inlined into its callers; no table access, so neither SECURITY DEFINER nor SET search_path). '
'Contract: the ids an event refers to, read from data.object in either Stripe API shape: jsonb '
'{object_id, customer_id, subscription_id} (each null when absent). subscription_id: the subscription itself, '
'invoice.parent.subscription_details.subscription (2025-03-31.basil and later), invoice.subscription or '
'checkout.session.subscription (older), else the first line''s subscription. Never raises.';

REVOKE ALL ON FUNCTION public._stripe_event_refs(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._stripe_event_refs(jsonb) TO service_role;
