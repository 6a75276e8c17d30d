-- link_stripe_customer v1 (revision 0001).
CREATE OR REPLACE FUNCTION public.link_stripe_customer(user_id text, stripe_customer_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_user_id constant text := link_stripe_customer.user_id;
    v_customer_id constant text := link_stripe_customer.stripe_customer_id;
    v_row public.stripe_customers;
    v_owner text;
BEGIN
    -- Both ids are required and the customer id must be a Stripe customer id.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'link_stripe_customer: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF v_customer_id IS NULL OR v_customer_id !~ '^cus_' THEN
        RAISE EXCEPTION 'link_stripe_customer: malformed customer id (user_id=%, stripe_customer_id=%)',
            v_user_id, coalesce(quote_literal(v_customer_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe customer ids start with cus_.';
    END IF;

    -- A customer belongs to one user.
    SELECT c.user_id INTO v_owner
    FROM public.stripe_customers AS c
    WHERE c.stripe_customer_id = v_customer_id;
    IF v_owner IS NOT NULL AND v_owner <> v_user_id THEN
        RAISE EXCEPTION 'link_stripe_customer: customer already linked (stripe_customer_id=%, user_id=%)',
            v_customer_id, v_owner
            USING ERRCODE = 'BD004';
    END IF;

    -- Create the user's row if needed, lock it, and link unless it holds another customer.
    INSERT INTO public.stripe_customers AS c (user_id)
    VALUES (v_user_id)
    ON CONFLICT ON CONSTRAINT stripe_customers_pkey DO NOTHING;
    SELECT c.* INTO STRICT v_row FROM public.stripe_customers AS c WHERE c.user_id = v_user_id FOR UPDATE;
    IF v_row.stripe_customer_id IS NOT NULL AND v_row.stripe_customer_id <> v_customer_id THEN
        RAISE EXCEPTION 'link_stripe_customer: user already has a customer (user_id=%, stripe_customer_id=%)',
            v_user_id, v_row.stripe_customer_id
            USING ERRCODE = 'BD004', HINT = 'A user keeps one Stripe customer; unlink it first.';
    END IF;
    IF v_row.stripe_customer_id IS NULL THEN
        UPDATE public.stripe_customers AS c
        SET stripe_customer_id = v_customer_id, updated_at = now()
        WHERE c.user_id = v_user_id
        RETURNING c.* INTO v_row;
    END IF;

    RETURN jsonb_build_object('user_id', v_row.user_id, 'stripe_customer_id', v_row.stripe_customer_id);
END
$function$;

COMMENT ON FUNCTION public.link_stripe_customer(text, text) IS
'Contract: links user_id to a Stripe customer id (cus_...), creating the user''s row if needed; idempotent for the '
'same pair. Returns jsonb {user_id, stripe_customer_id}. Errors: 22023 for a missing user id or malformed customer id; '
'BD004 when the customer belongs to another user or the user already has another customer.';

REVOKE ALL ON FUNCTION public.link_stripe_customer(text, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.link_stripe_customer(text, text) TO service_role;
