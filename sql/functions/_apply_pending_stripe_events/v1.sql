-- _apply_pending_stripe_events v1 (revision 0003).
CREATE OR REPLACE FUNCTION public._apply_pending_stripe_events(customer_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_customer_id constant text := _apply_pending_stripe_events.customer_id;
    v_done bigint[] := '{}'::bigint[];
    v_id bigint;
    v_results jsonb := '[]'::jsonb;
BEGIN
    -- Serialise with event processing for this customer (see _lock_stripe_customer).
    PERFORM public._lock_stripe_customer(v_customer_id);

    -- Oldest first (event created, then event id); each event once, even if
    -- it stays pending, so the loop ends.
    LOOP
        SELECT e.id INTO v_id
        FROM public.stripe_events AS e
        WHERE
            e.customer_id = v_customer_id
            AND e.status = 'pending'
            AND NOT (e.id = ANY(v_done))
        ORDER BY e.event_created, e.stripe_event_id
        LIMIT 1
        FOR UPDATE;
        EXIT WHEN NOT FOUND;
        v_done := v_done || v_id;
        v_results := v_results || jsonb_build_array(public._attempt_stripe_event(v_id));
    END LOOP;

    RETURN v_results;
END
$function$;

COMMENT ON FUNCTION public._apply_pending_stripe_events(text) IS
'Internal. Contract: processes the pending events of customer_id (stripe_events.status = pending) one at a time in '
'order of the event''s created time, then its id, each through _attempt_stripe_event (its own sub-transaction: a '
'failure is recorded on that event and does not stop the others), under the customer''s lock. Returns a jsonb array '
'of their {event_id, status, detail}. Called by the trigger on stripe_customers when a customer is linked.';

REVOKE ALL ON FUNCTION public._apply_pending_stripe_events(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._apply_pending_stripe_events(text) TO service_role;
