-- _valid_stripe_event v1 (revision 0008): stripe_events' row rules, the table's one CHECK (see
-- _valid_credit_transaction for why a function). IMMUTABLE, no table access: neither SECURITY DEFINER
-- nor SET search_path.
CREATE OR REPLACE FUNCTION public._valid_stripe_event(
    stripe_event_id text,
    status text,
    retry_count integer
)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SECURITY INVOKER
AS $function$
BEGIN
    -- As a CHECK reads it: false breaks a rule, true or null (a null input) passes.
    RETURN
        stripe_event_id <> ''
        AND status IN ('received', 'processed', 'ignored', 'stale', 'pending', 'failed')
        AND retry_count >= 0;
END
$function$;

COMMENT ON FUNCTION public._valid_stripe_event(text, text, integer) IS
'Internal, the CHECK of stripe_events (constraint stripe_events_valid). Contract: false when a row breaks a rule, '
'else true (null when an input it needs is null, which a CHECK passes). Rules: stripe_event_id is not empty; status '
'is received, processed, ignored, stale, pending or failed; retry_count >= 0. IMMUTABLE: changing the rules needs a '
'new version and a revision that validates the stored rows again.';

REVOKE ALL ON FUNCTION public._valid_stripe_event(text, text, integer) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._valid_stripe_event(text, text, integer) TO service_role;
