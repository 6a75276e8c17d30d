-- _lock_stripe_event v1 (revision 0006).
CREATE OR REPLACE FUNCTION public._lock_stripe_event(event_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_event_id constant text := _lock_stripe_event.event_id;
BEGIN
    -- Class 1111774021 ('BDSE') keeps these keys apart from _lock_stripe_customer's
    -- ('BDSC') and _lock_user's ('BDBU'); a hash collision only serialises two events.
    PERFORM pg_advisory_xact_lock(1111774021, hashtext(v_event_id));
END
$function$;

COMMENT ON FUNCTION public._lock_stripe_event(text) IS
'Internal. Contract: takes the exclusive transaction-level advisory lock of a Stripe event id (class 1111774021, key '
'hashtext(event_id)). process_stripe_event takes it after the customer''s lock and before it looks for the event''s '
'row: deliveries of one event run one after the other, and a later one finds the row the first one recorded. Order: '
'customer lock, event lock, event row, _lock_user.';

REVOKE ALL ON FUNCTION public._lock_stripe_event(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._lock_stripe_event(text) TO service_role;
