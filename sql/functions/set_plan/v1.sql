-- set_plan v1 (revision 0002).
CREATE OR REPLACE FUNCTION public.set_plan(
    price_id text,
    name text,
    credits_per_period integer,
    reset_each_period boolean DEFAULT false,
    amount_cents integer DEFAULT null,
    currency text DEFAULT null,
    billing_interval text DEFAULT null,
    active boolean DEFAULT true
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_price_id constant text := btrim(set_plan.price_id);
    v_name constant text := btrim(set_plan.name);
    v_credits constant integer := set_plan.credits_per_period;
    v_reset constant boolean := coalesce(set_plan.reset_each_period, false);
    v_amount_cents constant integer := set_plan.amount_cents;
    v_currency constant text := lower(nullif(btrim(set_plan.currency), ''));
    v_interval constant text := lower(nullif(btrim(set_plan.billing_interval), ''));
    v_active constant boolean := coalesce(set_plan.active, true);
    v_old public.plans;
    v_row public.plans;
    v_created boolean;
BEGIN
    -- Arguments: the table's rules, checked first for a clear message.
    IF v_price_id IS NULL OR v_price_id = '' THEN
        RAISE EXCEPTION 'set_plan: price_id is required (price_id=%)', coalesce(quote_literal(v_price_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the Stripe price id (price_...).';
    END IF;
    IF v_name IS NULL OR v_name = '' THEN
        RAISE EXCEPTION 'set_plan: name is required (price_id=%)', v_price_id
            USING ERRCODE = '22023';
    END IF;
    IF v_credits IS NULL OR v_credits <= 0 THEN
        RAISE EXCEPTION 'set_plan: credits_per_period must be a positive integer (price_id=%, credits_per_period=%)',
            v_price_id, coalesce(v_credits::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF v_amount_cents < 0 THEN
        RAISE EXCEPTION 'set_plan: amount_cents must not be negative (price_id=%, amount_cents=%)',
            v_price_id, v_amount_cents
            USING ERRCODE = '22023';
    END IF;
    IF v_currency !~ '^[a-z]{3}$' THEN
        RAISE EXCEPTION 'set_plan: currency must be an ISO 4217 code (price_id=%, currency=%)',
            v_price_id, quote_literal(v_currency)
            USING ERRCODE = '22023', HINT = 'For example usd or eur.';
    END IF;
    IF v_interval NOT IN ('day', 'week', 'month', 'year') THEN
        RAISE EXCEPTION 'set_plan: unknown billing interval (price_id=%, billing_interval=%)',
            v_price_id, quote_literal(v_interval)
            USING ERRCODE = '22023', HINT = 'One of day, week, month, year.';
    END IF;

    -- Create, or lock and update the existing plan.
    INSERT INTO public.plans AS p (
        price_id, name, credits_per_period, reset_each_period, amount_cents, currency, billing_interval, active
    )
    VALUES (v_price_id, v_name, v_credits, v_reset, v_amount_cents, v_currency, v_interval, v_active)
    ON CONFLICT ON CONSTRAINT plans_pkey DO NOTHING
    RETURNING p.* INTO v_row;
    v_created := FOUND;
    IF NOT v_created THEN
        SELECT p.* INTO STRICT v_old FROM public.plans AS p WHERE p.price_id = v_price_id FOR UPDATE;
        UPDATE public.plans AS p
        SET
            name = v_name,
            credits_per_period = v_credits,
            reset_each_period = v_reset,
            amount_cents = v_amount_cents,
            currency = v_currency,
            billing_interval = v_interval,
            active = v_active,
            updated_at = now()
        WHERE p.price_id = v_price_id
        RETURNING p.* INTO v_row;
    END IF;

    -- The plan name is part of cached states: drop the rows that show this price.
    IF v_created OR v_old.name IS DISTINCT FROM v_name THEN
        DELETE FROM public.subscription_cache AS c WHERE c.price_id = v_price_id;
    END IF;

    RETURN to_jsonb(v_row) || jsonb_build_object('created', v_created);
END
$function$;

COMMENT ON FUNCTION public.set_plan(text, text, integer, boolean, integer, text, text, boolean) IS
'Contract: creates or updates the plan of a Stripe price (upsert by price_id; metadata is kept) and returns the plan '
'row as jsonb {price_id, name, credits_per_period, amount_cents, currency, billing_interval, reset_each_period, '
'active, metadata, created_at, updated_at} plus created (true when new). currency and billing_interval are '
'lower-cased; a null reset_each_period or active takes its default. A new plan or a new name drops the '
'subscription_cache rows of that price (the next read recomputes them). Errors: 22023 when price_id or name is null '
'or blank, credits_per_period is null or <= 0, amount_cents < 0, currency is not 3 letters, or billing_interval is '
'not day, week, month or year.';

REVOKE ALL ON FUNCTION public.set_plan(text, text, integer, boolean, integer, text, text, boolean)
FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.set_plan(text, text, integer, boolean, integer, text, text, boolean) TO service_role;
