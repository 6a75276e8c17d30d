-- process_stripe_event v2 (revision 0006): a new event is applied first and then recorded with its
-- outcome in one INSERT (v1: INSERT, row lock, UPDATE); the event's advisory lock replaces the row lock
-- for serialising deliveries of one event.
CREATE OR REPLACE FUNCTION public.process_stripe_event(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_event constant jsonb := process_stripe_event.event;
    v_event_id text;
    v_refs jsonb;
    v_id bigint;
    v_row public.stripe_events;
    v_outcome jsonb;
    v_status text;
    v_detail jsonb;
BEGIN
    -- The envelope: an object with a non-empty id and type, created in unix
    -- seconds, data.object an object, api_version a string when present.
    IF v_event IS NULL OR jsonb_typeof(v_event) <> 'object' THEN
        RAISE EXCEPTION 'process_stripe_event: the event must be a JSON object (event=%)',
            coalesce(left(v_event::text, 80), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    v_event_id := v_event ->> 'id';
    IF jsonb_typeof(v_event -> 'id') IS DISTINCT FROM 'string' OR btrim(v_event_id) = '' THEN
        RAISE EXCEPTION 'process_stripe_event: id must be a non-empty string (id=%)',
            coalesce(left((v_event -> 'id')::text, 80), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the whole Stripe event (evt_...), not its data.object.';
    END IF;
    IF jsonb_typeof(v_event -> 'type') IS DISTINCT FROM 'string' OR btrim(v_event ->> 'type') = '' THEN
        RAISE EXCEPTION 'process_stripe_event: type must be a non-empty string (event_id=%, type=%)',
            v_event_id, coalesce(left((v_event -> 'type')::text, 80), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(v_event -> 'created') IS DISTINCT FROM 'number' OR (v_event ->> 'created') !~ '^[0-9]{1,12}$' THEN
        RAISE EXCEPTION 'process_stripe_event: created must be a non-negative integer (event_id=%, created=%)',
            v_event_id, coalesce(left((v_event -> 'created')::text, 80), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe''s created is unix seconds.';
    END IF;
    IF jsonb_typeof(v_event #> '{data,object}') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'process_stripe_event: data.object must be a JSON object (event_id=%)', v_event_id
            USING ERRCODE = '22023';
    END IF;
    IF coalesce(jsonb_typeof(v_event -> 'api_version'), 'null') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'process_stripe_event: api_version must be a string or null (event_id=%)', v_event_id
            USING ERRCODE = '22023';
    END IF;

    -- The customer's lock first (before the event's): an event either sees its
    -- customer's link or is pending before the link looks for pending ones.
    v_refs := public._stripe_event_refs(v_event);
    IF v_refs ->> 'customer_id' IS NOT NULL THEN
        PERFORM public._lock_stripe_customer(v_refs ->> 'customer_id');
    END IF;

    -- Then the event's own lock: a concurrent delivery of the same event waits
    -- here until the first one commits, and then finds its row.
    PERFORM public._lock_stripe_event(v_event_id);

    -- Seen before and done (processed, ignored, stale): a duplicate, nothing changes.
    -- Seen before and not done (failed, pending): Stripe's retry processes it again.
    SELECT e.* INTO v_row FROM public.stripe_events AS e WHERE e.stripe_event_id = v_event_id FOR UPDATE;
    IF FOUND THEN
        IF v_row.processed THEN
            RETURN jsonb_build_object(
                'event_id', v_event_id,
                'status', 'duplicate',
                'detail', jsonb_build_object(
                    'first_status', v_row.status, 'processed_at', v_row.processed_at, 'retry_count', v_row.retry_count
                )
            );
        END IF;
        RETURN public._attempt_stripe_event(v_row.id);
    END IF;

    -- New: apply it (a failure rolls back its effects and comes back as
    -- failed), then record it once with its outcome, in the same transaction.
    v_outcome := public._dispatch_stripe_event(v_event);
    v_status := v_outcome ->> 'status';
    v_detail := coalesce(v_outcome -> 'detail', '{}'::jsonb);
    IF v_status = 'failed' THEN
        v_detail := v_detail || jsonb_build_object('retry_count', 1);
    END IF;
    INSERT INTO public.stripe_events AS e (
        stripe_event_id, event_type, object_id, payload, status, processed, processed_at, error, retry_count, detail,
        event_created, api_version, livemode, customer_id, subscription_id
    )
    VALUES (
        v_event_id, v_event ->> 'type', v_refs ->> 'object_id', v_event, v_status,
        v_status IN ('processed', 'ignored', 'stale'),
        CASE WHEN v_status IN ('processed', 'ignored', 'stale') THEN now() END,
        v_outcome ->> 'error', CASE WHEN v_status = 'failed' THEN 1 ELSE 0 END, v_detail,
        to_timestamp((v_event ->> 'created')::bigint), v_event ->> 'api_version',
        CASE WHEN jsonb_typeof(v_event -> 'livemode') = 'boolean' THEN (v_event ->> 'livemode')::boolean END,
        v_refs ->> 'customer_id', v_refs ->> 'subscription_id'
    )
    ON CONFLICT ON CONSTRAINT stripe_events_stripe_event_id_key DO NOTHING
    RETURNING e.id INTO v_id;
    IF v_id IS NULL THEN
        -- Only a writer that bypasses process_stripe_event's locks gets here:
        -- undo the effects; the caller may deliver the event again.
        RAISE EXCEPTION 'process_stripe_event: event recorded concurrently (event_id=%)', v_event_id
            USING ERRCODE = '40001', HINT = 'Deliver the event again: it will be a duplicate.';
    END IF;

    RETURN jsonb_build_object('event_id', v_event_id, 'status', v_status, 'detail', v_detail);
END
$function$;

COMMENT ON FUNCTION public.process_stripe_event(jsonb) IS
'Contract: records and applies one Stripe webhook event (the whole envelope) exactly once. Returns jsonb {event_id, '
'status, detail}. status: processed (applied; detail.action subscription | credits | payment_failed | link with the '
'applied function''s result), duplicate (this event id was already done; nothing changes; detail {first_status, '
'processed_at, retry_count}), ignored (a type billingdb does not handle, or nothing to do: detail.reason), stale '
'(older than the subscription''s applied state: detail.subscription), pending (no user is linked to the event''s '
'customer yet: detail {reason, customer_id}; applied automatically, in order of created then id, when the customer '
'is linked), failed (the effects rolled back; detail {sqlstate, error, hint, retry_count}; the row keeps error and '
'retry_count; a new delivery or retry_stripe_event processes it again). Handled types: customer.subscription.created, '
'updated, deleted, paused, resumed (apply_subscription_change, watermark = the event''s created and id: strictly '
'newer applies, older is stale, a same-second change applies only if the state machine allows it); invoice.paid and '
'invoice.payment_succeeded (add_subscription_credits once per invoice, credits from plans by price, else the '
'payload''s metadata.credits; billing_reason recorded; unknown price: failed with BD003); invoice.payment_failed '
'(subscription to past_due, activity logged); checkout.session.completed (client_reference_id user <-> customer). '
'Reads both API shapes (before and since 2025-03-31.basil). The event''s effects and its processed mark commit '
'together; concurrent deliveries of one event apply it once. Errors (nothing recorded): 22023 when the event is not '
'an object or id, type (non-empty strings), created (non-negative integer), data.object (object) or api_version '
'(string or null) is missing or of the wrong type.';

REVOKE ALL ON FUNCTION public.process_stripe_event(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.process_stripe_event(jsonb) TO service_role;
