-- _lock_stripe_customer v1 (revision 0003).
CREATE OR REPLACE FUNCTION public._lock_stripe_customer(customer_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_customer_id constant text := _lock_stripe_customer.customer_id;
BEGIN
    -- Class 1111774019 ('BDSC') keeps these keys apart from _lock_user's ('BDBU');
    -- a hash collision only serialises two customers.
    PERFORM pg_advisory_xact_lock(1111774019, hashtext(v_customer_id));
END
$function$;

COMMENT ON FUNCTION public._lock_stripe_customer(text) IS
'Internal. Contract: takes the exclusive transaction-level advisory lock of a Stripe customer (class 1111774019, key '
'hashtext(customer_id)). Event processing takes it before it locks the event row or any user, and so does applying '
'pending events when the customer is linked: an event is either parked as pending before the link commits (and then '
'applied by it) or sees the link. Order: customer lock, event row, _lock_user.';

REVOKE ALL ON FUNCTION public._lock_stripe_customer(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._lock_stripe_customer(text) TO service_role;
