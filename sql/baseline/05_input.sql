-- Input limits: how long an id, a key or a text may be and how large and deep
-- a metadata object may be, checked in one place by every entry point before
-- it writes anything. A value over a limit is an invalid argument (22023)
-- naming the function, the argument and the limit, never a bare "value too
-- long", "integer out of range" or "index row size exceeds" from deep inside.
--
-- The limits: ids and idempotency keys 255 characters (a Stripe id is under
-- 100; an application user id a UUID or a Clerk id), an email 320, a
-- description or a reason 1000, metadata 16 kB as JSON text and 10 levels of
-- nesting.

CREATE OR REPLACE FUNCTION billingdb._check_text(caller text, argument text, value text, max_length integer)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SECURITY INVOKER
AS $function$
BEGIN
    -- Too long: name the argument and the limit, show the start of the value.
    IF length(_check_text.value) > _check_text.max_length THEN
        RAISE EXCEPTION '%: % is too long (length=%, max=%, starts=%)',
            _check_text.caller, _check_text.argument, length(_check_text.value), _check_text.max_length,
            quote_literal(left(_check_text.value, 40))
            USING ERRCODE = '22023';
    END IF;
END
$function$;

COMMENT ON FUNCTION billingdb._check_text(text, text, text, integer) IS
'Internal, pure. Contract: raises 22023 "<caller>: <argument> is too long (length, max, starts)" when value has more '
'than max_length characters; null and shorter values pass.';

REVOKE ALL ON FUNCTION billingdb._check_text(text, text, text, integer) FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION billingdb._check_stripe_id(caller text, argument text, value text, prefix text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SECURITY INVOKER
AS $function$
BEGIN
    -- A Stripe id: its prefix, then at least one character, no white space.
    IF
        _check_stripe_id.value IS NOT NULL
        AND (
            length(_check_stripe_id.value) > 255
            OR left(_check_stripe_id.value, length(_check_stripe_id.prefix)) <> _check_stripe_id.prefix
            OR length(_check_stripe_id.value) = length(_check_stripe_id.prefix)
            OR _check_stripe_id.value ~ '\s'
        )
    THEN
        RAISE EXCEPTION '%: % must be a Stripe id %<id> of at most 255 characters (length=%, starts=%)',
            _check_stripe_id.caller, _check_stripe_id.argument, _check_stripe_id.prefix,
            length(_check_stripe_id.value), quote_literal(left(_check_stripe_id.value, 40))
            USING ERRCODE = '22023';
    END IF;
END
$function$;

COMMENT ON FUNCTION billingdb._check_stripe_id(text, text, text, text) IS
'Internal, pure. Contract: raises 22023 unless value is null or prefix followed by at least one character, without '
'white space, 255 characters at most (e.g. prefix cus_: cus_ alone is refused).';

REVOKE ALL ON FUNCTION billingdb._check_stripe_id(text, text, text, text) FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION billingdb._check_metadata(caller text, argument text, value jsonb)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SECURITY INVOKER
AS $function$
BEGIN
    -- Null passes (callers default it to {}); otherwise an object, 16 kB, 10 levels.
    IF _check_metadata.value IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(_check_metadata.value) <> 'object' THEN
        RAISE EXCEPTION '%: % must be a JSON object (type=%)',
            _check_metadata.caller, _check_metadata.argument, jsonb_typeof(_check_metadata.value)
            USING ERRCODE = '22023';
    END IF;
    IF octet_length(_check_metadata.value::text) > 16384 THEN
        RAISE EXCEPTION '%: % is too large (bytes=%, max=16384)',
            _check_metadata.caller, _check_metadata.argument, octet_length(_check_metadata.value::text)
            USING ERRCODE = '22023', HINT = 'Keep large payloads elsewhere and store a reference.';
    END IF;
    IF jsonb_path_exists(_check_metadata.value, 'strict $.**{11 to last}') THEN
        RAISE EXCEPTION '%: % is nested too deeply (max=10 levels)', _check_metadata.caller, _check_metadata.argument
            USING ERRCODE = '22023';
    END IF;
END
$function$;

COMMENT ON FUNCTION billingdb._check_metadata(text, text, jsonb) IS
'Internal, pure. Contract: raises 22023 unless value is null or a JSON object of at most 16384 bytes as text with '
'at most 10 levels of nesting.';

REVOKE ALL ON FUNCTION billingdb._check_metadata(text, text, jsonb) FROM public, anon, authenticated;
