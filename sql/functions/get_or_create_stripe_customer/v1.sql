-- get_or_create_stripe_customer v1 (revision 0001).
CREATE OR REPLACE FUNCTION public.get_or_create_stripe_customer(user_id text, email text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := get_or_create_stripe_customer.user_id;
    v_email constant text := nullif(btrim(get_or_create_stripe_customer.email), '');
    v_created boolean := false;
    v_row public.stripe_customers;
BEGIN
    -- A user id is required; an email, when given, must look like one.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'get_or_create_stripe_customer: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id (e.g. the Clerk user id).';
    END IF;
    IF v_email IS NOT NULL AND v_email !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN
        RAISE EXCEPTION 'get_or_create_stripe_customer: malformed email (user_id=%, email=%)',
            v_user_id, quote_literal(v_email)
            USING ERRCODE = '22023';
    END IF;

    -- One row per user even with concurrent callers: the loser of the insert
    -- race waits for the winner's commit and then reads its row.
    INSERT INTO public.stripe_customers AS c (user_id, email)
    VALUES (v_user_id, v_email)
    ON CONFLICT ON CONSTRAINT stripe_customers_pkey DO NOTHING
    RETURNING c.* INTO v_row;
    v_created := FOUND;

    IF NOT v_created THEN
        SELECT c.* INTO STRICT v_row FROM public.stripe_customers AS c WHERE c.user_id = v_user_id;
        -- Keep the email current without rewriting an unchanged row.
        IF v_email IS NOT NULL AND v_email IS DISTINCT FROM v_row.email THEN
            UPDATE public.stripe_customers AS c
            SET email = v_email, updated_at = now()
            WHERE c.user_id = v_user_id
            RETURNING c.* INTO v_row;
        END IF;
    END IF;

    RETURN jsonb_build_object(
        'user_id', v_row.user_id,
        'email', v_row.email,
        'stripe_customer_id', v_row.stripe_customer_id,
        'needs_stripe_customer', v_row.stripe_customer_id IS NULL,
        'created', v_created,
        'customer_params', CASE WHEN v_row.stripe_customer_id IS NULL THEN jsonb_build_object(
            'email', v_row.email,
            'metadata', jsonb_build_object('user_id', v_row.user_id),
            'idempotency_key', 'billingdb-customer-' || v_row.user_id
        ) END
    );
END
$function$;

COMMENT ON FUNCTION public.get_or_create_stripe_customer(text, text) IS
'Contract: ensures one stripe_customers row for user_id (idempotent, safe under concurrent calls) and returns jsonb '
'{user_id, email, stripe_customer_id, needs_stripe_customer, created, customer_params}. '
'stripe_customer_id is null while no Stripe customer is linked; then needs_stripe_customer is true and customer_params '
'holds the email, metadata.user_id and an idempotency_key for Stripe''s POST /v1/customers; link the result with '
'link_stripe_customer(user_id, customer_id). A non-null email replaces the stored one. '
'Errors: 22023 when user_id is null or blank or the email is malformed.';

REVOKE ALL ON FUNCTION public.get_or_create_stripe_customer(text, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_or_create_stripe_customer(text, text) TO service_role;
