-- retry_stripe_event v1 (revision 0003).
CREATE OR REPLACE FUNCTION public.retry_stripe_event(event_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_event_id constant text := btrim(retry_stripe_event.event_id);
    v_customer_id text;
    v_row public.stripe_events;
BEGIN
    -- An event id is required, and the event must have been received.
    IF v_event_id IS NULL OR v_event_id = '' THEN
        RAISE EXCEPTION 'retry_stripe_event: event_id is required (event_id=%)',
            coalesce(quote_literal(retry_stripe_event.event_id), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT e.customer_id INTO v_customer_id FROM public.stripe_events AS e WHERE e.stripe_event_id = v_event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'retry_stripe_event: unknown event (event_id=%)', v_event_id
            USING ERRCODE = 'BD030', HINT = 'billingdb events list shows the events received.';
    END IF;

    -- The same lock order as process_stripe_event: customer, then the event row.
    IF v_customer_id IS NOT NULL THEN
        PERFORM public._lock_stripe_customer(v_customer_id);
    END IF;
    SELECT e.* INTO STRICT v_row FROM public.stripe_events AS e WHERE e.stripe_event_id = v_event_id FOR UPDATE;

    -- Done already: nothing to retry.
    IF v_row.processed THEN
        RETURN jsonb_build_object(
            'event_id', v_event_id,
            'status', 'duplicate',
            'detail', jsonb_build_object(
                'first_status', v_row.status, 'processed_at', v_row.processed_at, 'retry_count', v_row.retry_count
            )
        );
    END IF;

    -- Failed, pending, or marked unprocessed by hand: process the stored payload again.
    RETURN public._attempt_stripe_event(v_row.id);
END
$function$;

COMMENT ON FUNCTION public.retry_stripe_event(text) IS
'Contract: processes a stored event again from its payload, as process_stripe_event would, when it is not done '
'(status failed or pending, or processed set to false by hand as in the runbook). Returns jsonb {event_id, status, '
'detail} with process_stripe_event''s statuses; duplicate (nothing changes) when the event is already processed, '
'ignored or stale. A failure increments retry_count and records error. Errors: 22023 for a null or blank event_id; '
'BD030 when no event with that id was received.';

REVOKE ALL ON FUNCTION public.retry_stripe_event(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.retry_stripe_event(text) TO service_role;
