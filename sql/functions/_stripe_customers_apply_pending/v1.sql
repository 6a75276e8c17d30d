-- _stripe_customers_apply_pending v1 (revision 0003): trigger function.
CREATE OR REPLACE FUNCTION public._stripe_customers_apply_pending()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
BEGIN
    -- A new link only: an insert with a customer, or an update that changes it.
    IF new.stripe_customer_id IS NULL
        OR (tg_op = 'UPDATE' AND old.stripe_customer_id IS NOT DISTINCT FROM new.stripe_customer_id) THEN
        RETURN NULL;
    END IF;

    -- The customer's pending events apply now, in this transaction.
    PERFORM public._apply_pending_stripe_events(new.stripe_customer_id);
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION public._stripe_customers_apply_pending() IS
'Internal. Contract: AFTER INSERT OR UPDATE OF stripe_customer_id trigger on stripe_customers: when a user is newly '
'linked to a Stripe customer (by link_stripe_customer or otherwise), that customer''s pending Stripe events are '
'applied in order in the same transaction (_apply_pending_stripe_events). Never raises for an event''s failure: that '
'event records it.';

REVOKE ALL ON FUNCTION public._stripe_customers_apply_pending() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._stripe_customers_apply_pending() TO service_role;
