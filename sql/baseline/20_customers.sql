-- Customers: which application user is which Stripe customer.

CREATE TABLE billingdb.stripe_customers (
    user_id text PRIMARY KEY CHECK (user_id <> ''),
    email text,
    stripe_customer_id text UNIQUE CHECK (stripe_customer_id ~ '^cus_'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE billingdb.stripe_customers IS
'One row per application user; stripe_customer_id is null until the Stripe customer is linked.';

-- Private: row level security with no policy (only the owner, through the
-- entry points, reads or writes), and no privilege for any other role.
ALTER TABLE billingdb.stripe_customers ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON TABLE billingdb.stripe_customers FROM public, anon, authenticated, service_role;

-- _lock_stripe_customer: one SQL expression, inlined by the planner into its
-- callers (a SECURITY DEFINER function or one with SET is never inlined). An
-- advisory lock needs no privilege, so definer rights would give it nothing.
CREATE OR REPLACE FUNCTION billingdb._lock_stripe_customer(customer_id text)
RETURNS void
LANGUAGE sql
VOLATILE
SECURITY INVOKER
AS $function$
    -- Class 1111774019 ('BDSC') keeps these keys apart from _lock_user's ('BDBU');
    -- a hash collision only serialises two customers.
    SELECT pg_catalog.pg_advisory_xact_lock(1111774019, pg_catalog.hashtext(customer_id))
$function$;

COMMENT ON FUNCTION billingdb._lock_stripe_customer(text) IS
'Internal, inlined into its callers (no table access, so neither SECURITY DEFINER nor SET search_path). Contract: '
'takes the exclusive transaction-level advisory lock of a Stripe customer (class 1111774019, key '
'hashtext(customer_id)). Event processing takes it before it locks the event or any user, and so does applying '
'pending events when the customer is linked: an event is either parked as pending before the link commits (and then '
'applied by it) or sees the link. Order: customer lock, event lock (_lock_stripe_event), event row, _lock_user.';

REVOKE ALL ON FUNCTION billingdb._lock_stripe_customer(text) FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION public.get_or_create_stripe_customer(user_id text, email text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_user_id constant text := get_or_create_stripe_customer.user_id;
    v_email constant text := nullif(btrim(get_or_create_stripe_customer.email), '');
    v_created boolean := false;
    v_row billingdb.stripe_customers;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_text('get_or_create_stripe_customer', 'user_id', v_user_id, 255);
    PERFORM billingdb._check_text('get_or_create_stripe_customer', 'email', v_email, 320);

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
    INSERT INTO billingdb.stripe_customers AS c (user_id, email)
    VALUES (v_user_id, v_email)
    ON CONFLICT ON CONSTRAINT stripe_customers_pkey DO NOTHING
    RETURNING c.* INTO v_row;
    v_created := FOUND;

    IF NOT v_created THEN
        SELECT c.* INTO STRICT v_row FROM billingdb.stripe_customers AS c WHERE c.user_id = v_user_id;
        -- Keep the email current without rewriting an unchanged row.
        IF v_email IS NOT NULL AND v_email IS DISTINCT FROM v_row.email THEN
            UPDATE billingdb.stripe_customers AS c
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

CREATE OR REPLACE FUNCTION public.link_stripe_customer(user_id text, stripe_customer_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_user_id constant text := link_stripe_customer.user_id;
    v_customer_id constant text := link_stripe_customer.stripe_customer_id;
    v_row billingdb.stripe_customers;
    v_owner text;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_text('link_stripe_customer', 'user_id', v_user_id, 255);
    PERFORM billingdb._check_stripe_id('link_stripe_customer', 'stripe_customer_id', v_customer_id, 'cus_');

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

    -- A customer belongs to one user. Its lock first (as event processing
    -- takes it): a concurrent link of the same customer waits here, then sees
    -- this one's owner (BD004) instead of failing on the unique key.
    PERFORM billingdb._lock_stripe_customer(v_customer_id);
    SELECT c.user_id INTO v_owner
    FROM billingdb.stripe_customers AS c
    WHERE c.stripe_customer_id = v_customer_id;
    IF v_owner IS NOT NULL AND v_owner <> v_user_id THEN
        RAISE EXCEPTION 'link_stripe_customer: customer already linked (stripe_customer_id=%, user_id=%)',
            v_customer_id, v_owner
            USING ERRCODE = 'BD004';
    END IF;

    -- Create the user's row if needed, lock it, and link unless it holds another customer.
    INSERT INTO billingdb.stripe_customers AS c (user_id)
    VALUES (v_user_id)
    ON CONFLICT ON CONSTRAINT stripe_customers_pkey DO NOTHING;
    SELECT c.* INTO STRICT v_row FROM billingdb.stripe_customers AS c WHERE c.user_id = v_user_id FOR UPDATE;
    IF v_row.stripe_customer_id IS NOT NULL AND v_row.stripe_customer_id <> v_customer_id THEN
        RAISE EXCEPTION 'link_stripe_customer: user already has a customer (user_id=%, stripe_customer_id=%)',
            v_user_id, v_row.stripe_customer_id
            USING ERRCODE = 'BD004', HINT = 'A user keeps one Stripe customer; unlink it first.';
    END IF;
    IF v_row.stripe_customer_id IS NULL THEN
        UPDATE billingdb.stripe_customers AS c
        SET stripe_customer_id = v_customer_id, updated_at = now()
        WHERE c.user_id = v_user_id
        RETURNING c.* INTO v_row;
    END IF;

    RETURN jsonb_build_object('user_id', v_row.user_id, 'stripe_customer_id', v_row.stripe_customer_id);
END
$function$;

COMMENT ON FUNCTION public.link_stripe_customer(text, text) IS
'Contract: links user_id to a Stripe customer id (cus_...), creating the user''s row if needed; idempotent for the '
'same pair; concurrent links of one customer are serialised by its lock (_lock_stripe_customer). Returns jsonb '
'{user_id, stripe_customer_id}. Errors: 22023 for a missing user id or malformed customer id; '
'BD004 when the customer belongs to another user or the user already has another customer.';

REVOKE ALL ON FUNCTION public.link_stripe_customer(text, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.link_stripe_customer(text, text) TO service_role;

-- _stripe_user_id: the app's user id a Stripe object carries in its metadata.
CREATE OR REPLACE FUNCTION billingdb._stripe_user_id(object jsonb, what text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
DECLARE
    v_key constant text := coalesce(billingdb._billing_setting('user_id_metadata_key'), 'user_id');
    v_value constant jsonb := _stripe_user_id.object -> 'metadata' -> v_key;
BEGIN
    -- Absent, null or blank: the object names no user.
    IF v_value IS NULL OR jsonb_typeof(v_value) = 'null' THEN
        RETURN NULL;
    END IF;
    -- A user id is a non-empty string of at most 255 characters; anything else is a data error.
    IF jsonb_typeof(v_value) <> 'string' OR length(v_value #>> '{}') > 255 THEN
        RAISE EXCEPTION '%.metadata.% is not a usable user id (type=%, length=%)',
            _stripe_user_id.what, v_key, jsonb_typeof(v_value), length(v_value #>> '{}')
            USING ERRCODE = '22023',
                HINT = 'Store the app''s user id as a string of at most 255 characters in that metadata key.';
    END IF;
    RETURN nullif(btrim(v_value #>> '{}'), '');
END
$function$;

COMMENT ON FUNCTION billingdb._stripe_user_id(jsonb, text) IS
'Internal. Contract: the user id a Stripe object carries in metadata under the key user_id_metadata_key (a setting, '
'user_id by default): null when the key is absent, null or blank; what names the object in errors. Errors: 22023 '
'when the value is not a string or is longer than 255 characters.';

REVOKE ALL ON FUNCTION billingdb._stripe_user_id(jsonb, text) FROM public, anon, authenticated;
