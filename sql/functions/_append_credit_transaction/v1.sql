-- _append_credit_transaction v1 (revision 0002): the one place that writes the ledger.
CREATE OR REPLACE FUNCTION public._append_credit_transaction(
    user_id text,
    amount integer,
    transaction_type text,
    description text,
    metadata jsonb,
    idempotency_key text,
    refund_of bigint
)
RETURNS public.credit_transactions
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := _append_credit_transaction.user_id;
    v_amount constant integer := _append_credit_transaction.amount;
    v_type constant text := _append_credit_transaction.transaction_type;
    v_description constant text := _append_credit_transaction.description;
    v_metadata constant jsonb := coalesce(_append_credit_transaction.metadata, '{}'::jsonb);
    v_key constant text := _append_credit_transaction.idempotency_key;
    v_refund_of constant bigint := _append_credit_transaction.refund_of;
    v_balance integer;
    v_row public.credit_transactions;
BEGIN
    IF v_amount > 0 THEN
        -- A credit: create the balance row or add to it.
        INSERT INTO public.credit_balances AS b (user_id, balance)
        VALUES (v_user_id, v_amount)
        ON CONFLICT ON CONSTRAINT credit_balances_pkey DO UPDATE
        SET balance = b.balance + excluded.balance, updated_at = now()
        RETURNING b.balance INTO v_balance;
    ELSE
        -- A debit: one conditional UPDATE, never read-then-write. No row means
        -- the balance is too low (or the user has none): report, change nothing.
        UPDATE public.credit_balances AS b
        SET balance = b.balance + v_amount, updated_at = now()
        WHERE b.user_id = v_user_id AND b.balance >= -v_amount
        RETURNING b.balance INTO v_balance;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;

    -- The entry, with the balance after it. The key is unique: a clash (only
    -- possible with another user's or another kind of call, since a user's
    -- calls are serialised by _lock_user and check their key first) raises,
    -- which also undoes the balance change above.
    INSERT INTO public.credit_transactions AS t (
        user_id, amount, transaction_type, description, metadata, idempotency_key, balance_after, refund_of
    )
    VALUES (v_user_id, v_amount, v_type, v_description, v_metadata, v_key, v_balance, v_refund_of)
    ON CONFLICT ON CONSTRAINT credit_transactions_idempotency_key_key DO NOTHING
    RETURNING t.* INTO v_row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency key already used by another call (idempotency_key=%, user_id=%)',
            quote_literal(v_key), v_user_id
            USING ERRCODE = 'BD012', HINT = 'Use a new key for a different call.';
    END IF;
    RETURN v_row;
END
$function$;

COMMENT ON FUNCTION public._append_credit_transaction(text, integer, text, text, jsonb, text, bigint) IS
'Internal. Contract: appends one ledger entry of user_id and moves the balance with it in the same transaction: '
'amount > 0 upserts the balance row; amount < 0 is one conditional UPDATE ... WHERE balance >= -amount RETURNING, '
'and returns null (nothing written) when the balance is too low or missing. Returns the new credit_transactions row '
'(balance_after set). The caller holds _lock_user(user_id) and validated the arguments. Errors: BD012 when '
'idempotency_key is already taken (the balance change is undone with it).';

REVOKE ALL ON FUNCTION public._append_credit_transaction(text, integer, text, text, jsonb, text, bigint)
FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._append_credit_transaction(text, integer, text, text, jsonb, text, bigint)
TO service_role;
