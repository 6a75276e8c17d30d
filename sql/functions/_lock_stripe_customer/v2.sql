-- _lock_stripe_customer v2 (revision 0006): one SQL expression, inlined by the planner into its
-- callers (v1 was PL/pgSQL with SECURITY DEFINER and SET search_path, which PostgreSQL never
-- inlines). An advisory lock needs no privilege, so definer rights gave it nothing. Same lock.
CREATE OR REPLACE FUNCTION public._lock_stripe_customer(customer_id text)
RETURNS void
LANGUAGE sql
VOLATILE
SECURITY INVOKER
AS $function$
    -- Class 1111774019 ('BDSC') keeps these keys apart from _lock_user's ('BDBU');
    -- a hash collision only serialises two customers.
    SELECT pg_catalog.pg_advisory_xact_lock(1111774019, pg_catalog.hashtext(customer_id))
$function$;

COMMENT ON FUNCTION public._lock_stripe_customer(text) IS
'Internal, inlined into its callers (no table access, so neither SECURITY DEFINER nor SET search_path). Contract: '
'takes the exclusive transaction-level advisory lock of a Stripe customer (class 1111774019, key '
'hashtext(customer_id)). Event processing takes it before it locks the event or any user, and so does applying '
'pending events when the customer is linked: an event is either parked as pending before the link commits (and then '
'applied by it) or sees the link. Order: customer lock, event lock (_lock_stripe_event), event row, _lock_user.';

REVOKE ALL ON FUNCTION public._lock_stripe_customer(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._lock_stripe_customer(text) TO service_role;
