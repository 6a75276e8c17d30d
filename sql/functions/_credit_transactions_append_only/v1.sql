-- _credit_transactions_append_only v1 (revision 0002): the ledger's guard trigger.
CREATE OR REPLACE FUNCTION public._credit_transactions_append_only()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
BEGIN
    -- Row level: name the entry someone tried to change.
    IF tg_level = 'ROW' THEN
        RAISE EXCEPTION 'credit_transactions is append-only (operation=%, id=%)', tg_op, old.id
            USING ERRCODE = 'BD014',
                HINT = 'Correct a balance with a new entry: grant_credits() or refund_credits().';
    END IF;
    -- Statement level (TRUNCATE).
    RAISE EXCEPTION 'credit_transactions is append-only (operation=%)', tg_op
        USING ERRCODE = 'BD014',
            HINT = 'Correct a balance with a new entry: grant_credits() or refund_credits().';
END
$function$;

COMMENT ON FUNCTION public._credit_transactions_append_only() IS
'Internal trigger of credit_transactions: every UPDATE, DELETE or TRUNCATE raises BD014 (the ledger is append-only; '
'corrections are new entries).';

REVOKE ALL ON FUNCTION public._credit_transactions_append_only() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._credit_transactions_append_only() TO service_role;
