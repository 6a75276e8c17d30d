-- _lock_stripe_event v1 (revision 0006): one SQL expression, inlined by the planner into
-- process_stripe_event (an advisory lock needs no privilege: no SECURITY DEFINER, no SET).
CREATE OR REPLACE FUNCTION public._lock_stripe_event(event_id text)
RETURNS void
LANGUAGE sql
VOLATILE
SECURITY INVOKER
AS $function$
    -- Class 1111774021 ('BDSE') keeps these keys apart from _lock_stripe_customer's
    -- ('BDSC') and _lock_user's ('BDBU'); a hash collision only serialises two events.
    SELECT pg_catalog.pg_advisory_xact_lock(1111774021, pg_catalog.hashtext(event_id))
$function$;

COMMENT ON FUNCTION public._lock_stripe_event(text) IS
'Internal, inlined into its callers (no table access, so neither SECURITY DEFINER nor SET search_path). Contract: '
'takes the exclusive transaction-level advisory lock of a Stripe event id (class 1111774021, key hashtext(event_id)). '
'process_stripe_event takes it after the customer''s lock and before it looks for the event''s row: deliveries of '
'one event run one after the other, and a later one finds the row the first one recorded. Order: customer lock, '
'event lock, event row, _lock_user.';

REVOKE ALL ON FUNCTION public._lock_stripe_event(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._lock_stripe_event(text) TO service_role;
