-- _stripe_invoice_credits v2 (revision 0009): a one-line invoice (a renewal) is read without a query; with
-- several lines the query only picks the line, whose price and metadata.credits are then read once (v1 read
-- them in the query for every line). Same result.
CREATE OR REPLACE FUNCTION public._stripe_invoice_credits(invoice jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_invoice constant jsonb := _stripe_invoice_credits.invoice;
    v_invoice_id constant text := public._stripe_id(_stripe_invoice_credits.invoice -> 'id');
    v_lines constant jsonb := CASE
        WHEN jsonb_typeof(_stripe_invoice_credits.invoice #> '{lines,data}') = 'array'
            THEN _stripe_invoice_credits.invoice #> '{lines,data}'
    END;
    v_line jsonb;
    v_price_id text;
    v_metadata_credits text;
    v_credits integer;
BEGIN
    -- The subscription's line: the first line with a price, preferring a
    -- non-proration line with a non-negative amount (a plan change also lists
    -- the unused time of the old price). A renewal has one line: no query.
    IF jsonb_array_length(v_lines) = 1 THEN
        v_line := v_lines -> 0;
    ELSE
        SELECT l.line INTO v_line
        FROM jsonb_array_elements(v_lines) WITH ORDINALITY AS l (line, n)
        WHERE
            coalesce(
                public._stripe_id(l.line #> '{pricing,price_details,price}'),
                public._stripe_id(l.line -> 'price'),
                public._stripe_id(l.line -> 'plan')
            ) IS NOT null
        ORDER BY
            coalesce(
                (l.line #>> '{parent,subscription_item_details,proration}')::boolean,
                (l.line ->> 'proration')::boolean,
                false
            ),
            (l.line ->> 'amount') ~ '^-',
            l.n
        LIMIT 1;
    END IF;

    -- Its price: basil+ pricing.price_details.price; older: line.price
    -- (expanded) or line.plan.
    v_price_id := coalesce(
        public._stripe_id(v_line #> '{pricing,price_details,price}'),
        public._stripe_id(v_line -> 'price'),
        public._stripe_id(v_line -> 'plan')
    );
    IF v_price_id IS NULL THEN
        RAISE EXCEPTION '_stripe_invoice_credits: no invoice line has a price (invoice_id=%)', v_invoice_id
            USING ERRCODE = 'BD003', HINT = 'Only subscription invoices with a priced line allocate credits.';
    END IF;
    v_metadata_credits := coalesce(
        v_line #>> '{pricing,price_details,price,metadata,credits}',
        v_line #>> '{price,metadata,credits}',
        v_line #>> '{plan,metadata,credits}',
        v_line #>> '{metadata,credits}'
    );

    -- Credits: the plan for that price, else metadata.credits in the payload
    -- (the line's price, then the subscription's metadata on the invoice).
    SELECT p.credits_per_period INTO v_credits FROM public.plans AS p WHERE p.price_id = v_price_id;
    IF FOUND THEN
        RETURN jsonb_build_object('price_id', v_price_id, 'credits', v_credits, 'source', 'plan');
    END IF;
    IF v_metadata_credits IS NULL THEN
        v_metadata_credits := coalesce(
            v_invoice #>> '{parent,subscription_details,metadata,credits}',
            v_invoice #>> '{subscription_details,metadata,credits}'
        );
    END IF;
    IF btrim(v_metadata_credits) ~ '^[0-9]{1,9}$' AND btrim(v_metadata_credits)::integer > 0 THEN
        RETURN jsonb_build_object(
            'price_id', v_price_id, 'credits', btrim(v_metadata_credits)::integer, 'source', 'metadata'
        );
    END IF;

    RAISE EXCEPTION '_stripe_invoice_credits: unknown price (price_id=%, invoice_id=%, metadata_credits=%)',
        v_price_id, v_invoice_id, coalesce(quote_literal(v_metadata_credits), 'NULL')
        USING ERRCODE = 'BD003',
            HINT = 'Add the plan (set_plan / billingdb plans set PRICE --credits N) or metadata.credits on the price; '
            'Stripe''s next delivery or billingdb events retry then applies the invoice.';
END
$function$;

COMMENT ON FUNCTION public._stripe_invoice_credits(jsonb) IS
'Internal. Contract: the credits a paid subscription invoice grants, read in either Stripe API shape: jsonb '
'{price_id, credits, source}. price_id: the first line with a price (pricing.price_details.price since '
'2025-03-31.basil, line.price or line.plan before), non-proration non-negative lines first. credits: '
'plans.credits_per_period for that price (source plan), else a positive integer metadata.credits on the line''s '
'price or the invoice''s subscription_details (source metadata). Errors: BD003 when no line has a price, or the price '
'is not a plan and the payload carries no valid metadata.credits.';

REVOKE ALL ON FUNCTION public._stripe_invoice_credits(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._stripe_invoice_credits(jsonb) TO service_role;
