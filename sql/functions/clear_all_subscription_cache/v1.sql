-- clear_all_subscription_cache v1 (revision 0002).
CREATE OR REPLACE FUNCTION public.clear_all_subscription_cache()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_deleted integer;
BEGIN
    -- Every row: the next read of each user is a miss that recomputes.
    DELETE FROM public.subscription_cache AS c WHERE true;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    -- Restart the hit/miss counters and record since when they count.
    PERFORM setval('public.subscription_cache_hits'::regclass, 1, false);
    PERFORM setval('public.subscription_cache_misses'::regclass, 1, false);
    INSERT INTO public.billing_settings AS s (name, value, description)
    VALUES (
        'cache_stats_reset_at', now()::text,
        'Since when the cache hit/miss counters count (set by clear_all_subscription_cache).'
    )
    ON CONFLICT ON CONSTRAINT billing_settings_pkey DO UPDATE SET value = excluded.value;

    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION public.clear_all_subscription_cache() IS
'Contract: deletes every subscription_cache row and returns how many; resets the hit and miss counters to 0 and '
'sets the setting cache_stats_reset_at to now(). The counter reset (setval) is not undone if the caller''s '
'transaction rolls back.';

REVOKE ALL ON FUNCTION public.clear_all_subscription_cache() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.clear_all_subscription_cache() TO service_role;
