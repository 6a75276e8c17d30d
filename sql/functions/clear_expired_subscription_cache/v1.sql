-- clear_expired_subscription_cache v1 (revision 0002).
CREATE OR REPLACE FUNCTION public.clear_expired_subscription_cache()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_deleted integer;
BEGIN
    -- Rows a read would not use any more (a row refreshed meanwhile is
    -- re-checked by DELETE and kept).
    DELETE FROM public.subscription_cache AS c WHERE c.expires_at <= now();
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION public.clear_expired_subscription_cache() IS
'Contract: deletes the subscription_cache rows with expires_at <= now() and returns how many; the hit/miss counters '
'are kept. Safe to run at any time (e.g. from pg_cron).';

REVOKE ALL ON FUNCTION public.clear_expired_subscription_cache() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.clear_expired_subscription_cache() TO service_role;
