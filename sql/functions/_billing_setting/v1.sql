-- _billing_setting v1 (revision 0002).
CREATE OR REPLACE FUNCTION public._billing_setting(name text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_name constant text := _billing_setting.name;
BEGIN
    -- One setting by name; null when it is not set (callers apply their default).
    RETURN (SELECT s.value FROM public.billing_settings AS s WHERE s.name = v_name);
END
$function$;

COMMENT ON FUNCTION public._billing_setting(text) IS
'Internal. Contract: the value of billing_settings.name as text, or null when no such setting exists (the caller '
'applies its documented default). Settings: cache_ttl_seconds (default 300), past_due_can_spend (default true), '
'cache_stats_reset_at.';

REVOKE ALL ON FUNCTION public._billing_setting(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._billing_setting(text) TO service_role;
