-- _credit_hold_json v1 (revision 0005): a credit hold as the functions return it.
CREATE OR REPLACE FUNCTION public._credit_hold_json(hold public.credit_holds)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_hold constant public.credit_holds := _credit_hold_json.hold;
BEGIN
    -- The hold's public fields; the ledger entries by id.
    RETURN jsonb_build_object(
        'hold_id', v_hold.hold_id,
        'user_id', v_hold.user_id,
        'amount', v_hold.amount,
        'status', v_hold.status,
        'idempotency_key', v_hold.idempotency_key,
        'description', v_hold.description,
        'metadata', v_hold.metadata,
        'created_at', v_hold.created_at,
        'expires_at', v_hold.expires_at,
        'settled_at', v_hold.settled_at,
        'reason', v_hold.reason,
        'result', v_hold.result,
        'hold_transaction_id', v_hold.hold_transaction_id,
        'release_transaction_id', v_hold.release_transaction_id,
        'usage_transaction_id', v_hold.usage_transaction_id
    );
END
$function$;

COMMENT ON FUNCTION public._credit_hold_json(public.credit_holds) IS
'Internal. Contract: a credit_holds row as jsonb {hold_id, user_id, amount, status, idempotency_key, description, '
'metadata, created_at, expires_at, settled_at, reason, result, hold_transaction_id, release_transaction_id, '
'usage_transaction_id}: the common part of what reserve_credits, commit_credit_hold and release_credit_hold return.';

REVOKE ALL ON FUNCTION public._credit_hold_json(public.credit_holds) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._credit_hold_json(public.credit_holds) TO service_role;
