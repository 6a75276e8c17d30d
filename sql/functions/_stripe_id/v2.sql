-- _stripe_id v2 (revision 0006): a pure expression, inlined by the planner into its callers.
-- v1 was SECURITY DEFINER with SET search_path, which PostgreSQL never inlines: each of the
-- dozen calls per webhook event ran its own SQL-function executor and search_path switch.
-- It touches no table, so definer rights give it nothing; its callers run with search_path ''.
CREATE OR REPLACE FUNCTION public._stripe_id(value jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SECURITY INVOKER
AS $function$
    -- An expandable field: an id string, or the expanded object with its id.
    SELECT CASE pg_catalog.jsonb_typeof(value)
        WHEN 'string' THEN nullif(value #>> '{}', '')
        WHEN 'object' THEN nullif(value ->> 'id', '')
    END
$function$;

COMMENT ON FUNCTION public._stripe_id(jsonb) IS
'Internal, pure (inlined into its callers; no table access, so neither SECURITY DEFINER nor SET search_path). '
'Contract: the Stripe id held by an expandable field: the string itself, or the expanded object''s id; '
'null for null, an empty string or any other JSON type. Never raises.';

REVOKE ALL ON FUNCTION public._stripe_id(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._stripe_id(jsonb) TO service_role;
