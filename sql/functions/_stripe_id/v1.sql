-- _stripe_id v1 (revision 0003).
CREATE OR REPLACE FUNCTION public._stripe_id(value jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
    -- An expandable field: an id string, or the expanded object with its id.
    SELECT CASE pg_catalog.jsonb_typeof(value)
        WHEN 'string' THEN nullif(value #>> '{}', '')
        WHEN 'object' THEN nullif(value ->> 'id', '')
    END
$function$;

COMMENT ON FUNCTION public._stripe_id(jsonb) IS
'Internal. Contract: the Stripe id held by an expandable field: the string itself, or the expanded object''s id; '
'null for null, an empty string or any other JSON type. Never raises.';

REVOKE ALL ON FUNCTION public._stripe_id(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._stripe_id(jsonb) TO service_role;
