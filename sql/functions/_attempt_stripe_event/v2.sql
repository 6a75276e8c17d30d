-- _attempt_stripe_event v2 (revision 0006): the sub-transaction moved into
-- _dispatch_stripe_event v2; this records its outcome on the stored row.
CREATE OR REPLACE FUNCTION public._attempt_stripe_event(id bigint)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_id constant bigint := _attempt_stripe_event.id;
    v_row public.stripe_events;
    v_outcome jsonb;
    v_status text;
    v_detail jsonb;
BEGIN
    -- The caller holds the row lock. Mark it in progress, so that pending
    -- events applied meanwhile in this transaction (a link) skip it.
    SELECT e.* INTO STRICT v_row FROM public.stripe_events AS e WHERE e.id = v_id;
    IF v_row.status <> 'received' THEN
        UPDATE public.stripe_events AS e
        SET status = 'received'
        WHERE e.id = v_id;
    END IF;

    -- Apply it (a failure rolls back its effects and comes back as failed).
    v_outcome := public._dispatch_stripe_event(v_row.payload);
    v_status := v_outcome ->> 'status';
    v_detail := coalesce(v_outcome -> 'detail', '{}'::jsonb);
    IF v_status = 'failed' THEN
        v_detail := v_detail || jsonb_build_object('retry_count', v_row.retry_count + 1);
    END IF;

    -- Record the outcome; it commits together with the effects.
    UPDATE public.stripe_events AS e
    SET
        status = v_status,
        processed = v_status IN ('processed', 'ignored', 'stale'),
        processed_at = CASE WHEN v_status IN ('processed', 'ignored', 'stale') THEN now() END,
        error = v_outcome ->> 'error',
        retry_count = e.retry_count + CASE WHEN v_status = 'failed' THEN 1 ELSE 0 END,
        detail = v_detail
    WHERE e.id = v_id;

    RETURN jsonb_build_object('event_id', v_row.stripe_event_id, 'status', v_status, 'detail', v_detail);
END
$function$;

COMMENT ON FUNCTION public._attempt_stripe_event(bigint) IS
'Internal. Contract: processes the stored stripe_events row id again (a failed or pending event; the caller holds '
'its lock and its customer''s lock) from its payload with _dispatch_stripe_event, then the row records the outcome '
'in the same transaction as the effects: status; processed (true for processed, ignored, stale) and processed_at; '
'detail. On any error the effects roll back and the row records status failed, error ''[SQLSTATE] message'' and '
'retry_count + 1. Returns jsonb {event_id, status, detail}; a failure''s detail is {sqlstate, error, hint, '
'retry_count}.';

REVOKE ALL ON FUNCTION public._attempt_stripe_event(bigint) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._attempt_stripe_event(bigint) TO service_role;
