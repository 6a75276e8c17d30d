-- _valid_credit_hold v1 (revision 0008): credit_holds' row rules, the table's one CHECK (ten CHECK
-- constraints were read and planned again for every statement that writes a hold: see
-- _valid_credit_transaction). IMMUTABLE, no table access: neither SECURITY DEFINER nor SET search_path.
CREATE OR REPLACE FUNCTION public._valid_credit_hold(
    status text,
    amount integer,
    user_id text,
    idempotency_key text,
    metadata jsonb,
    result jsonb,
    created_at timestamptz,
    expires_at timestamptz,
    settled_at timestamptz,
    release_transaction_id bigint,
    usage_transaction_id bigint
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
        status IN ('held', 'committed', 'released', 'expired')
        AND amount > 0
        AND pg_catalog.btrim(user_id) <> ''
        AND pg_catalog.btrim(idempotency_key) <> ''
        AND pg_catalog.jsonb_typeof(metadata) = 'object'
        AND expires_at > created_at
        -- Held: not settled, nothing released. Settled: when, and its release or usage entry.
        AND (status = 'held') = (settled_at IS NULL)
        AND (status = 'held') = (release_transaction_id IS NULL)
        AND (status = 'committed') = (usage_transaction_id IS NOT NULL)
        AND (status = 'committed' OR result IS NULL);
END
$function$;

COMMENT ON FUNCTION public._valid_credit_hold(
    text, integer, text, text, jsonb, jsonb, timestamptz, timestamptz, timestamptz, bigint, bigint
) IS
'Internal, the CHECK of credit_holds (constraint credit_holds_valid). Contract: false when a row breaks a rule, else '
'true (null when an input it needs is null, which a CHECK passes). Rules: status is held, committed, released or '
'expired; amount > 0; user_id and idempotency_key are not blank; metadata is a JSON object; expires_at is after '
'created_at; settled_at is set exactly when the hold is no longer held, and so is release_transaction_id; '
'usage_transaction_id is set exactly for a committed hold; only a committed hold has a result. IMMUTABLE: changing '
'the rules needs a new version and a revision that validates the stored rows again.';

REVOKE ALL ON FUNCTION public._valid_credit_hold(
    text, integer, text, text, jsonb, jsonb, timestamptz, timestamptz, timestamptz, bigint, bigint
) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._valid_credit_hold(
    text, integer, text, text, jsonb, jsonb, timestamptz, timestamptz, timestamptz, bigint, bigint
) TO service_role;
