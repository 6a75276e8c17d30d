-- Stripe events: process_stripe_event() records each webhook event once
-- (stripe_event_id is unique), applies it by type inside a sub-transaction
-- (its effects and its outcome commit together; a failure keeps the record
-- with its error), orders subscription changes by the per-subscription
-- watermark, and parks the events of a customer that no user is linked to yet
-- as pending until the link arrives (a trigger on stripe_customers applies
-- them, in order).

-- _valid_stripe_event: stripe_events' row rules, the table's one CHECK (see
-- _valid_credit_transaction for why a function). IMMUTABLE, no table access: neither SECURITY DEFINER
-- nor SET search_path.
CREATE OR REPLACE FUNCTION billingdb._valid_stripe_event(
    stripe_event_id text,
    status text,
    retry_count integer
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
        stripe_event_id <> ''
        AND status IN ('received', 'processed', 'ignored', 'stale', 'pending', 'failed')
        AND retry_count >= 0;
END
$function$;

COMMENT ON FUNCTION billingdb._valid_stripe_event(text, text, integer) IS
'Internal, the CHECK of stripe_events (constraint stripe_events_valid). Contract: false when a row breaks a rule, '
'else true (null when an input it needs is null, which a CHECK passes). Rules: stripe_event_id is not empty; status '
'is received, processed, ignored, stale, pending or failed; retry_count >= 0. IMMUTABLE: changing the rules needs a '
'new version and a revision that validates the stored rows again.';

REVOKE ALL ON FUNCTION billingdb._valid_stripe_event(text, text, integer) FROM public, anon, authenticated;

-- Every Stripe webhook event received, for idempotency and the runbook.
CREATE TABLE public.stripe_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stripe_event_id text NOT NULL UNIQUE,
    event_type text NOT NULL,
    object_id text,
    payload jsonb NOT NULL,
    processed boolean NOT NULL DEFAULT false,
    processed_at timestamptz,
    error text,
    retry_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'received',
    event_created timestamptz,
    api_version text,
    livemode boolean,
    customer_id text,
    subscription_id text,
    detail jsonb,
    -- The row rules, in one CHECK (see _valid_stripe_event).
    CONSTRAINT stripe_events_valid CHECK (billingdb._valid_stripe_event(stripe_event_id, status, retry_count))
)
-- A row keeps its payload inline up to a page (8160 bytes, the largest
-- allowed) instead of cutting it into 2 kB TOAST chunks, each a row of the
-- TOAST table and an entry of its index; a larger event still goes out of
-- line. The price is space: a 4-8 kB event fills a page of its own.
WITH (toast_tuple_target = 8160);

-- The payload is stored uncompressed (still out of line when large):
-- compressing 3-10 kB of JSON with pglz cost more CPU than the rest of the
-- INSERT, on the webhook's hot path.
ALTER TABLE public.stripe_events ALTER COLUMN payload SET STORAGE EXTERNAL;

CREATE INDEX idx_stripe_events_unprocessed
ON public.stripe_events (created_at) WHERE NOT processed;

CREATE INDEX idx_stripe_events_object_id ON public.stripe_events (object_id);

CREATE INDEX idx_stripe_events_type_created
ON public.stripe_events (event_type, created_at);

-- Pending events of a customer, in the order they are applied when the link arrives.
CREATE INDEX idx_stripe_events_pending_customer
ON public.stripe_events (customer_id, event_created, stripe_event_id)
WHERE status = 'pending';

COMMENT ON TABLE public.stripe_events IS
'Stripe webhook events by stripe_event_id (unique): the idempotency record and the processing log.';

COMMENT ON COLUMN public.stripe_events.status IS
'processed, ignored (type not handled), stale (older than the applied state): done, processed = true; '
'pending (customer not linked yet), failed (error, retry_count): processed = false; received: being processed.';

-- The event log is part of the interface: service_role reads it (the runbook's
-- queries); only the entry points write it.
ALTER TABLE public.stripe_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY service_role_read ON public.stripe_events
FOR SELECT TO service_role USING (true);

REVOKE ALL ON TABLE public.stripe_events FROM public, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.stripe_events TO service_role;

-- _stripe_id: a pure expression, inlined by the planner into its callers (a dozen calls per
-- webhook event). It touches no table, so definer rights would give it nothing.
CREATE OR REPLACE FUNCTION billingdb._stripe_id(value jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SECURITY INVOKER
AS $function$
    -- An expandable field: an id string, or the expanded object with its id.
    SELECT CASE pg_catalog.jsonb_typeof(value)
        WHEN 'string' THEN nullif(value #>> '{}', '')
        WHEN 'object' THEN nullif(value ->> 'id', '')
    END
$function$;

COMMENT ON FUNCTION billingdb._stripe_id(jsonb) IS
'Internal, pure (inlined into its callers; no table access, so neither SECURITY DEFINER nor SET search_path). '
'Contract: the Stripe id held by an expandable field: the string itself, or the expanded object''s id; '
'null for null, an empty string or any other JSON type. Never raises.';

REVOKE ALL ON FUNCTION billingdb._stripe_id(jsonb) FROM public, anon, authenticated;

-- _stripe_event_refs: one SQL expression, inlined by the planner into its callers (two or three
-- calls per webhook event). It touches no table, so definer rights would give it nothing.
CREATE OR REPLACE FUNCTION billingdb._stripe_event_refs(event jsonb)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
SECURITY INVOKER
AS $function$
    -- Read from data.object. The customer: the object's customer field, or
    -- the object itself. The subscription, in either API shape: the object
    -- itself; a basil+ invoice's parent.subscription_details; an older
    -- invoice's or a checkout session's subscription field; else the first
    -- invoice line's (basil+, then older).
    SELECT pg_catalog.jsonb_build_object(
        'object_id', billingdb._stripe_id(event #> '{data,object,id}'),
        'customer_id', CASE
            WHEN event #>> '{data,object,object}' = 'customer' THEN billingdb._stripe_id(event #> '{data,object,id}')
            ELSE billingdb._stripe_id(event #> '{data,object,customer}')
        END,
        'subscription_id', CASE
            WHEN event #>> '{data,object,object}' = 'subscription' THEN billingdb._stripe_id(event #> '{data,object,id}')
            ELSE coalesce(
                billingdb._stripe_id(event #> '{data,object,parent,subscription_details,subscription}'),
                billingdb._stripe_id(event #> '{data,object,subscription}'),
                billingdb._stripe_id(event #> '{data,object,lines,data,0,parent,subscription_item_details,subscription}'),
                billingdb._stripe_id(event #> '{data,object,lines,data,0,subscription}')
            )
        END
    )
$function$;

COMMENT ON FUNCTION billingdb._stripe_event_refs(jsonb) IS
'Internal, pure (inlined into its callers; no table access, so neither SECURITY DEFINER nor SET search_path). '
'Contract: the ids an event refers to, read from data.object in either Stripe API shape: jsonb '
'{object_id, customer_id, subscription_id} (each null when absent). subscription_id: the subscription itself, '
'invoice.parent.subscription_details.subscription (2025-03-31.basil and later), invoice.subscription or '
'checkout.session.subscription (older), else the first line''s subscription. Never raises.';

REVOKE ALL ON FUNCTION billingdb._stripe_event_refs(jsonb) FROM public, anon, authenticated;

-- _lock_stripe_event: one SQL expression, inlined by the planner into
-- process_stripe_event (an advisory lock needs no privilege: no SECURITY DEFINER, no SET).
CREATE OR REPLACE FUNCTION billingdb._lock_stripe_event(event_id text)
RETURNS void
LANGUAGE sql
VOLATILE
SECURITY INVOKER
AS $function$
    -- Class 1111774021 ('BDSE') keeps these keys apart from _lock_stripe_customer's
    -- ('BDSC') and _lock_user's ('BDBU'); a hash collision only serialises two events.
    SELECT pg_catalog.pg_advisory_xact_lock(1111774021, pg_catalog.hashtext(event_id))
$function$;

COMMENT ON FUNCTION billingdb._lock_stripe_event(text) IS
'Internal, inlined into its callers (no table access, so neither SECURITY DEFINER nor SET search_path). Contract: '
'takes the exclusive transaction-level advisory lock of a Stripe event id (class 1111774021, key hashtext(event_id)). '
'process_stripe_event takes it after the customer''s lock and before it looks for the event''s row: deliveries of '
'one event run one after the other, and a later one finds the row the first one recorded. Order: customer lock, '
'event lock, event row, _lock_user.';

REVOKE ALL ON FUNCTION billingdb._lock_stripe_event(text) FROM public, anon, authenticated;

-- _stripe_invoice_credits: a one-line invoice (a renewal) is read without a query; with
-- several lines the query only picks the line, whose price and metadata.credits are then read once.
CREATE OR REPLACE FUNCTION billingdb._stripe_invoice_credits(invoice jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
DECLARE
    v_invoice constant jsonb := _stripe_invoice_credits.invoice;
    v_invoice_id constant text := billingdb._stripe_id(_stripe_invoice_credits.invoice -> 'id');
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
                billingdb._stripe_id(l.line #> '{pricing,price_details,price}'),
                billingdb._stripe_id(l.line -> 'price'),
                billingdb._stripe_id(l.line -> 'plan')
            ) IS NOT null
        ORDER BY
            -- A proration line says so with JSON true (any other value: not one).
            coalesce(l.line #> '{parent,subscription_item_details,proration}', l.line -> 'proration')
            IS NOT DISTINCT FROM 'true'::jsonb,
            (l.line ->> 'amount') ~ '^-',
            l.n
        LIMIT 1;
    END IF;

    -- Its price: basil+ pricing.price_details.price; older: line.price
    -- (expanded) or line.plan.
    v_price_id := coalesce(
        billingdb._stripe_id(v_line #> '{pricing,price_details,price}'),
        billingdb._stripe_id(v_line -> 'price'),
        billingdb._stripe_id(v_line -> 'plan')
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
    SELECT p.credits_per_period INTO v_credits FROM billingdb.plans AS p WHERE p.price_id = v_price_id;
    IF FOUND THEN
        RETURN jsonb_build_object('price_id', v_price_id, 'credits', v_credits, 'source', 'plan');
    END IF;
    IF v_metadata_credits IS NULL THEN
        v_metadata_credits := coalesce(
            v_invoice #>> '{parent,subscription_details,metadata,credits}',
            v_invoice #>> '{subscription_details,metadata,credits}'
        );
    END IF;
    IF btrim(v_metadata_credits) ~ '^[0-9]{1,9}$' AND btrim(v_metadata_credits)::integer > 1000000 THEN
        RAISE EXCEPTION '_stripe_invoice_credits: metadata.credits is above 1000000 (price_id=%, invoice_id=%, credits=%)',
            v_price_id, v_invoice_id, btrim(v_metadata_credits)
            USING ERRCODE = '22023',
                HINT = 'A plan grants at most 1000000 credits a period from metadata; define a larger plan with set_plan.';
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

COMMENT ON FUNCTION billingdb._stripe_invoice_credits(jsonb) IS
'Internal. Contract: the credits a paid subscription invoice grants, read in either Stripe API shape: jsonb '
'{price_id, credits, source}. price_id: the first line with a price (pricing.price_details.price since '
'2025-03-31.basil, line.price or line.plan before), non-proration non-negative lines first. credits: '
'plans.credits_per_period for that price (source plan), else a positive integer metadata.credits on the line''s '
'price or the invoice''s subscription_details (source metadata), at most 1000000. Errors: BD003 when no line has a '
'price, or the price is not a plan and the payload carries no valid metadata.credits; 22023 when metadata.credits '
'is above 1000000.';

REVOKE ALL ON FUNCTION billingdb._stripe_invoice_credits(jsonb) FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION billingdb._apply_stripe_checkout_completed(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_event constant jsonb := _apply_stripe_checkout_completed.event;
    v_session constant jsonb := _apply_stripe_checkout_completed.event #> '{data,object}';
    v_customer_id constant text := billingdb._stripe_id(_apply_stripe_checkout_completed.event #> '{data,object,customer}');
    v_subscription_id constant text := billingdb._stripe_id(
        _apply_stripe_checkout_completed.event #> '{data,object,subscription}'
    );
    v_user_id text;
    v_linked_user text;
    v_link jsonb;
    v_waiting text[];
    v_applied jsonb;
BEGIN
    -- Nothing to link without a customer (a guest payment).
    IF v_customer_id IS NULL THEN
        RETURN jsonb_build_object(
            'status', 'ignored',
            'detail', jsonb_build_object('reason', 'checkout session without a customer', 'session_id', v_session ->> 'id')
        );
    END IF;

    -- The user: client_reference_id, else metadata.user_id; without one the
    -- session can only confirm a link made elsewhere.
    v_user_id := nullif(btrim(coalesce(v_session ->> 'client_reference_id', v_session #>> '{metadata,user_id}')), '');
    SELECT c.user_id INTO v_linked_user FROM billingdb.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id;
    IF v_user_id IS NULL AND v_linked_user IS NULL THEN
        RETURN jsonb_build_object(
            'status', 'pending',
            'detail', jsonb_build_object(
                'reason', 'customer not linked to a user and the session names none', 'customer_id', v_customer_id
            )
        );
    END IF;

    -- The events waiting for this customer, to report what the link applies.
    SELECT coalesce(array_agg(e.stripe_event_id ORDER BY e.event_created, e.stripe_event_id), '{}')
    INTO v_waiting
    FROM public.stripe_events AS e
    WHERE e.customer_id = v_customer_id AND e.status = 'pending' AND e.stripe_event_id <> v_event ->> 'id';

    -- user <-> customer (BD004 when either is linked elsewhere). The trigger
    -- on stripe_customers applies the waiting events, in order.
    v_link := public.link_stripe_customer(coalesce(v_user_id, v_linked_user), v_customer_id);

    SELECT coalesce(jsonb_agg(
        jsonb_build_object('event_id', e.stripe_event_id, 'status', e.status)
        ORDER BY e.event_created, e.stripe_event_id
    ), '[]'::jsonb)
    INTO v_applied
    FROM public.stripe_events AS e
    WHERE e.stripe_event_id = ANY(v_waiting);

    -- customer <-> subscription is held by the subscription's own events (its
    -- user comes from this link); the session's subscription is logged here.
    INSERT INTO billingdb.activity_log (user_id, activity_type, details)
    VALUES (
        v_link ->> 'user_id', 'checkout_completed',
        jsonb_build_object(
            'session_id', v_session ->> 'id',
            'customer_id', v_customer_id,
            'subscription_id', v_subscription_id,
            'mode', v_session ->> 'mode',
            'stripe_event_id', v_event ->> 'id',
            'applied_pending', v_applied
        )
    );

    RETURN jsonb_build_object(
        'status', 'processed',
        'detail', jsonb_build_object(
            'action', 'link',
            'user_id', v_link ->> 'user_id',
            'customer_id', v_customer_id,
            'subscription_id', v_subscription_id,
            'applied_pending', v_applied
        )
    );
END
$function$;

COMMENT ON FUNCTION billingdb._apply_stripe_checkout_completed(jsonb) IS
'Internal. Contract: checkout.session.completed: links the session''s user (client_reference_id, else '
'metadata.user_id) to its customer with link_stripe_customer; the link applies the customer''s pending events in '
'order (trigger stripe_customers_apply_pending_events); logs checkout_completed (session, customer, subscription). '
'Returns jsonb {status, detail}: processed with detail {action: link, user_id, customer_id, subscription_id, '
'applied_pending: [{event_id, status}]}; pending when neither the session nor stripe_customers names the user; '
'ignored without a customer. Errors: BD004 when the user or the customer is linked elsewhere; 22023 from '
'link_stripe_customer.';

REVOKE ALL ON FUNCTION billingdb._apply_stripe_checkout_completed(jsonb) FROM public, anon, authenticated;

-- _apply_stripe_subscription_event: Stripe's state comes from _stripe_subscription_state (the
-- period from plain expressions when the subscription carries it, before basil, and from one query
-- over the items otherwise); the event's created time and id are the watermark.
CREATE OR REPLACE FUNCTION billingdb._apply_stripe_subscription_event(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_event constant jsonb := _apply_stripe_subscription_event.event;
    v_state jsonb;
    v_change jsonb;
BEGIN
    -- Stripe's state, in either API shape (22023 for a malformed subscription).
    v_state := billingdb._stripe_subscription_state(v_event #> '{data,object}');

    -- The state machine and the watermark (event created, event id) decide.
    v_change := public.apply_subscription_change(
        subscription_id => v_state ->> 'subscription_id',
        user_id => NULL,
        customer_id => v_state ->> 'customer_id',
        status => v_state ->> 'status',
        price_id => v_state ->> 'price_id',
        current_period_start => (v_state ->> 'current_period_start')::timestamptz,
        current_period_end => (v_state ->> 'current_period_end')::timestamptz,
        cancel_at_period_end => (v_state ->> 'cancel_at_period_end')::boolean,
        canceled_at => (v_state ->> 'canceled_at')::timestamptz,
        event_created => to_timestamp((v_event ->> 'created')::bigint),
        event_id => v_event ->> 'id'
    );

    -- created, updated, unchanged: processed; stale or a refused transition: stale.
    RETURN jsonb_build_object(
        'status', CASE WHEN v_change ->> 'result' IN ('stale', 'refused_transition') THEN 'stale' ELSE 'processed' END,
        'detail', jsonb_build_object('action', 'subscription', 'subscription', v_change)
    );
END
$function$;

COMMENT ON FUNCTION billingdb._apply_stripe_subscription_event(jsonb) IS
'Internal. Contract: applies a customer.subscription.* event (created, updated, deleted, paused, resumed) through '
'apply_subscription_change with the event''s created time and id as the watermark; Stripe''s state is '
'_stripe_subscription_state''s (either API shape; the stored period and price kept when the payload has none). '
'Returns jsonb {status, detail}: status processed (created, updated, unchanged) or stale '
'(older than the watermark, or a same-second or refused transition); detail {action: subscription, subscription: '
'apply_subscription_change''s result}. The customer must be linked (the dispatcher parks it as pending otherwise). '
'Errors: 22023 for a malformed subscription (_stripe_subscription_state); those of apply_subscription_change '
'(BD001, BD004, BD013).';

REVOKE ALL ON FUNCTION billingdb._apply_stripe_subscription_event(jsonb) FROM public, anon, authenticated;

-- _stripe_time: a Stripe time (unix seconds) read from a payload, checked: a malformed one is 22023
-- naming the field, never a cast error from deep inside.
CREATE OR REPLACE FUNCTION billingdb._stripe_time(value jsonb, what text)
RETURNS timestamptz
LANGUAGE plpgsql
IMMUTABLE
SECURITY INVOKER
AS $function$
BEGIN
    -- Absent or null: no time.
    IF _stripe_time.value IS NULL OR jsonb_typeof(_stripe_time.value) = 'null' THEN
        RETURN NULL;
    END IF;

    -- Unix seconds: a non-negative JSON integer.
    IF jsonb_typeof(_stripe_time.value) <> 'number' OR (_stripe_time.value #>> '{}') !~ '^[0-9]{1,12}$' THEN
        RAISE EXCEPTION '% must be unix seconds, a non-negative integer (value=%)',
            _stripe_time.what, left(_stripe_time.value::text, 40)
            USING ERRCODE = '22023', HINT = 'Pass the object as Stripe''s API returns it.';
    END IF;
    RETURN to_timestamp((_stripe_time.value #>> '{}')::bigint);
END
$function$;

COMMENT ON FUNCTION billingdb._stripe_time(jsonb, text) IS
'Internal, pure. Contract: the time a Stripe field holds (unix seconds, a non-negative JSON integer) as '
'timestamptz; null for null or an absent field. what names the field in errors. Errors: 22023 for any other value.';

REVOKE ALL ON FUNCTION billingdb._stripe_time(jsonb, text) FROM public, anon, authenticated;

-- _stripe_subscription_state: what billingdb keeps of a Stripe subscription object, in either API
-- shape: the webhook path and the sync read it here, in one way.
CREATE OR REPLACE FUNCTION billingdb._stripe_subscription_state(subscription jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
DECLARE
    v_sub constant jsonb := _stripe_subscription_state.subscription;
    v_subscription_id text;
    v_customer_id text;
    v_status text;
    v_items jsonb;
    v_period_start timestamptz;
    v_period_end timestamptz;
    v_price_id text;
    v_cancel_at timestamptz;
    v_cancel boolean;
BEGIN
    -- A subscription object with its id, its customer and one of Stripe's eight statuses.
    IF jsonb_typeof(v_sub) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '_stripe_subscription_state: the subscription must be a JSON object (subscription=%)',
            coalesce(left(v_sub::text, 80), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    v_subscription_id := billingdb._stripe_id(v_sub -> 'id');
    v_customer_id := billingdb._stripe_id(v_sub -> 'customer');
    PERFORM billingdb._check_stripe_id('_stripe_subscription_state', 'subscription.id', v_subscription_id, 'sub_');
    PERFORM billingdb._check_stripe_id('_stripe_subscription_state', 'subscription.customer', v_customer_id, 'cus_');
    IF v_subscription_id IS NULL THEN
        RAISE EXCEPTION '_stripe_subscription_state: the subscription has no id (subscription=%)', left(v_sub::text, 80)
            USING ERRCODE = '22023', HINT = 'Pass the subscription object (sub_...) as Stripe''s API returns it.';
    END IF;
    IF v_customer_id IS NULL THEN
        RAISE EXCEPTION '_stripe_subscription_state: the subscription names no customer (subscription_id=%)',
            v_subscription_id
            USING ERRCODE = '22023';
    END IF;
    v_status := CASE WHEN jsonb_typeof(v_sub -> 'status') = 'string' THEN v_sub ->> 'status' END;
    IF v_status IS NULL OR v_status NOT IN (
        'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'unpaid', 'canceled', 'paused'
    ) THEN
        RAISE EXCEPTION '_stripe_subscription_state: unknown status (subscription_id=%, status=%)',
            v_subscription_id, coalesce(left((v_sub -> 'status')::text, 40), 'NULL')
            USING ERRCODE = '22023',
                HINT = 'One of incomplete, incomplete_expired, trialing, active, past_due, unpaid, canceled, paused.';
    END IF;
    IF coalesce(jsonb_typeof(v_sub -> 'cancel_at_period_end'), 'null') NOT IN ('boolean', 'null') THEN
        RAISE EXCEPTION '_stripe_subscription_state: cancel_at_period_end must be a boolean (subscription_id=%)',
            v_subscription_id
            USING ERRCODE = '22023';
    END IF;

    -- The period, in either API shape: on the subscription before
    -- 2025-03-31.basil, on each item since (the items' span is the period:
    -- read them, in one query, only when the subscription does not say).
    v_items := CASE WHEN jsonb_typeof(v_sub #> '{items,data}') = 'array' THEN v_sub #> '{items,data}' END;
    v_period_start := billingdb._stripe_time(v_sub -> 'current_period_start', 'subscription.current_period_start');
    v_period_end := billingdb._stripe_time(v_sub -> 'current_period_end', 'subscription.current_period_end');
    IF (v_period_start IS NULL OR v_period_end IS NULL) AND v_items IS NOT NULL THEN
        SELECT
            coalesce(v_period_start, min(
                CASE WHEN v_period_start IS NULL THEN billingdb._stripe_time(
                    i.item -> 'current_period_start', 'subscription.items.data[].current_period_start'
                ) END
            )),
            coalesce(v_period_end, max(
                CASE WHEN v_period_end IS NULL THEN billingdb._stripe_time(
                    i.item -> 'current_period_end', 'subscription.items.data[].current_period_end'
                ) END
            ))
        INTO v_period_start, v_period_end
        FROM jsonb_array_elements(v_items) AS i (item);
    END IF;

    -- The price: the first item's (price, or plan before 2018), else the
    -- subscription's plan (the oldest shape).
    v_price_id := coalesce(
        billingdb._stripe_id(v_items #> '{0,price}'),
        billingdb._stripe_id(v_items #> '{0,plan}'),
        billingdb._stripe_id(v_sub -> 'plan')
    );

    -- A payload without a period or a price (an empty item list) says nothing
    -- about them: the stored ones stay, never erased by a null.
    IF v_period_start IS NULL OR v_period_end IS NULL OR v_price_id IS NULL THEN
        SELECT
            coalesce(v_period_start, s.current_period_start),
            coalesce(v_period_end, s.current_period_end),
            coalesce(v_price_id, s.price_id)
        INTO v_period_start, v_period_end, v_price_id
        FROM billingdb.subscriptions AS s
        WHERE s.subscription_id = v_subscription_id;
    END IF;

    -- Cancellation at the period end: the flag, or cancel_at set to the period end.
    v_cancel_at := billingdb._stripe_time(v_sub -> 'cancel_at', 'subscription.cancel_at');
    v_cancel := coalesce((v_sub ->> 'cancel_at_period_end')::boolean, false) OR coalesce(v_cancel_at = v_period_end, false);

    RETURN jsonb_build_object(
        'subscription_id', v_subscription_id,
        'customer_id', v_customer_id,
        'user_id', billingdb._stripe_user_id(v_sub, 'subscription'),
        'status', v_status,
        'price_id', v_price_id,
        'current_period_start', v_period_start,
        'current_period_end', v_period_end,
        'cancel_at_period_end', v_cancel,
        'canceled_at', billingdb._stripe_time(v_sub -> 'canceled_at', 'subscription.canceled_at')
    );
END
$function$;

COMMENT ON FUNCTION billingdb._stripe_subscription_state(jsonb) IS
'Internal. Contract: what billingdb keeps of a Stripe subscription object, read in either API shape: jsonb '
'{subscription_id, customer_id, user_id, status, price_id, current_period_start, current_period_end, '
'cancel_at_period_end, canceled_at}. The period: subscription.current_period_start/end (before 2025-03-31.basil), '
'else the span of items.data[].current_period_start/end (basil+); price_id: the first item''s price (or plan), else '
'subscription.plan; a payload without a period or a price keeps the stored ones (never erased by a null); '
'cancel_at_period_end: the flag, or cancel_at equal to the period end; user_id: the user the metadata names '
'(key: the setting user_id_metadata_key), else null. Errors: 22023 when the subscription is not an object, its id '
'(sub_) or customer (cus_) is missing or malformed, the status is not one of Stripe''s eight, '
'cancel_at_period_end is not a boolean, a time is not unix seconds, or the metadata user id is not usable.';

REVOKE ALL ON FUNCTION billingdb._stripe_subscription_state(jsonb) FROM public, anon, authenticated;

-- _check_sync_arguments: what every sync_stripe_* function checks first: when Stripe was read (it
-- becomes a watermark, so never in the future) and whether to apply.
CREATE OR REPLACE FUNCTION billingdb._check_sync_arguments(fn text, observed_at timestamptz, apply boolean)
RETURNS void
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $function$
BEGIN
    IF
        _check_sync_arguments.observed_at IS null OR NOT isfinite(_check_sync_arguments.observed_at)
        OR _check_sync_arguments.observed_at > now() + interval '1 minute'
    THEN
        RAISE EXCEPTION '%: observed_at is required, finite and may not be in the future (observed_at=%, now=%)',
            _check_sync_arguments.fn, coalesce(_check_sync_arguments.observed_at::text, 'NULL'), now()
            USING ERRCODE = '22023',
                HINT = 'Pass the time the listing was requested from Stripe (a minute of clock skew is allowed).';
    END IF;
    IF _check_sync_arguments.apply IS null THEN
        RAISE EXCEPTION '%: apply must be true or false', _check_sync_arguments.fn
            USING ERRCODE = '22023';
    END IF;
END
$function$;

COMMENT ON FUNCTION billingdb._check_sync_arguments(text, timestamptz, boolean) IS
'Internal. Contract: returns when observed_at is set, finite and at most a minute ahead of now() and apply is not null. '
'fn names the caller in errors. Errors: 22023 otherwise.';

REVOKE ALL ON FUNCTION billingdb._check_sync_arguments(text, timestamptz, boolean) FROM public, anon, authenticated;

-- sync_stripe_subscription: a subscription as Stripe's API lists it, compared with billingdb's
-- and, when asked, written through the one writer as a snapshot observed at observed_at.
CREATE OR REPLACE FUNCTION public.sync_stripe_subscription(
    subscription jsonb,
    observed_at timestamptz,
    apply boolean DEFAULT false
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_observed_at constant timestamptz := sync_stripe_subscription.observed_at;
    v_apply constant boolean := sync_stripe_subscription.apply;
    v_stripe jsonb;
    v_subscription_id text;
    v_customer_id text;
    v_linked_user text;
    v_stripe_user text;
    v_old billingdb.subscriptions;
    v_found boolean;
    v_fields jsonb;
    v_result text;
    v_reason text;
    v_change jsonb;
    v_sqlstate text;
    v_message text;
BEGIN
    -- Arguments: when Stripe was read (it becomes the watermark: never in the future), and apply.
    PERFORM billingdb._check_sync_arguments('sync_stripe_subscription', v_observed_at, v_apply);

    -- Stripe's state (22023 for a malformed subscription object).
    v_stripe := billingdb._stripe_subscription_state(sync_stripe_subscription.subscription);
    v_subscription_id := v_stripe ->> 'subscription_id';
    v_customer_id := v_stripe ->> 'customer_id';

    -- billingdb's side: the subscription's row, and the user its customer is
    -- linked to. Stripe's user: the metadata's, else that link.
    SELECT c.user_id INTO v_linked_user FROM billingdb.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id;
    SELECT s.* INTO v_old FROM billingdb.subscriptions AS s WHERE s.subscription_id = v_subscription_id;
    v_found := FOUND;
    v_stripe_user := coalesce(v_stripe ->> 'user_id', v_linked_user);

    -- The drift: each field where the two differ, as [billingdb's, Stripe's].
    SELECT coalesce(jsonb_object_agg(f.field, jsonb_build_array(f.ours, f.theirs)), '{}'::jsonb)
    INTO v_fields
    FROM (
        VALUES
        ('status', to_jsonb(v_old.status), v_stripe -> 'status'),
        ('price_id', to_jsonb(v_old.price_id), v_stripe -> 'price_id'),
        ('current_period_start', to_jsonb(v_old.current_period_start), v_stripe -> 'current_period_start'),
        ('current_period_end', to_jsonb(v_old.current_period_end), v_stripe -> 'current_period_end'),
        ('cancel_at_period_end', to_jsonb(v_old.cancel_at_period_end), v_stripe -> 'cancel_at_period_end'),
        ('canceled_at', to_jsonb(v_old.canceled_at), v_stripe -> 'canceled_at'),
        ('customer_id', to_jsonb(v_old.stripe_customer_id), v_stripe -> 'customer_id'),
        ('user_id', to_jsonb(coalesce(v_old.user_id, v_linked_user)), to_jsonb(v_stripe_user))
    ) AS f (field, ours, theirs)
    WHERE nullif(f.ours, 'null'::jsonb) IS DISTINCT FROM nullif(f.theirs, 'null'::jsonb);

    -- What the drift calls for.
    IF v_fields = '{}'::jsonb THEN
        v_result := 'in_sync';
    ELSIF NOT v_found AND (
        v_stripe ->> 'status' = 'incomplete_expired'
        OR (
            v_stripe ->> 'status' = 'canceled'
            AND coalesce((v_stripe ->> 'current_period_end')::timestamptz <= now(), true)
        )
    ) THEN
        -- Ended in Stripe and never seen here: nothing to keep (an account's
        -- history is not imported, nor its old invoices).
        v_result := 'ignored';
        v_reason := 'ended in Stripe and unknown to billingdb: nothing to keep';
    ELSIF v_stripe_user IS NULL THEN
        v_result := 'not_linked';
        v_reason := 'no user is linked to the customer and the subscription''s metadata names none: '
            'link them (billingdb customers link USER CUSTOMER), then sync again';
    ELSIF NOT v_apply THEN
        v_result := 'drift';
    ELSIF v_found AND v_old.last_event_created >= v_observed_at THEN
        -- An event at or after the listing was applied: it is as new as this snapshot.
        v_result := 'stale';
        v_reason := 'an event as new as the listing was applied: nothing written; sync again';
    ELSE
        -- The user the subscription's metadata names links its customer first,
        -- as its webhook would (the link applies the customer's pending events).
        -- Then the one writer, with the listing's time as the watermark (no
        -- event id): a later event applies over it, an older one is stale. A
        -- conflict (a link or a subscription of another user) writes nothing.
        BEGIN
            IF v_stripe ->> 'user_id' IS NOT NULL THEN
                PERFORM public.link_stripe_customer(v_stripe ->> 'user_id', v_customer_id);
            END IF;
            v_change := public.apply_subscription_change(
                subscription_id => v_subscription_id,
                user_id => v_stripe ->> 'user_id',
                customer_id => v_customer_id,
                status => v_stripe ->> 'status',
                price_id => v_stripe ->> 'price_id',
                current_period_start => (v_stripe ->> 'current_period_start')::timestamptz,
                current_period_end => (v_stripe ->> 'current_period_end')::timestamptz,
                cancel_at_period_end => (v_stripe ->> 'cancel_at_period_end')::boolean,
                canceled_at => (v_stripe ->> 'canceled_at')::timestamptz,
                event_created => v_observed_at,
                event_id => NULL
            );
            v_result := v_change ->> 'result';
        EXCEPTION WHEN SQLSTATE 'BD001' OR SQLSTATE 'BD004' OR SQLSTATE 'BD013' THEN
            GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
            v_result := 'failed';
            v_reason := format('[%s] %s', v_sqlstate, v_message);
        END;
        IF (v_change ->> 'applied')::boolean THEN
            INSERT INTO billingdb.activity_log (user_id, activity_type, details)
            VALUES (
                v_change ->> 'user_id', 'subscription_synced',
                jsonb_build_object(
                    'subscription_id', v_subscription_id, 'customer_id', v_customer_id, 'result', v_result,
                    'fields', v_fields, 'observed_at', v_observed_at,
                    'previous_event_created', v_old.last_event_created, 'previous_event_id', v_old.last_event_id
                )
            );
        END IF;
    END IF;

    RETURN jsonb_build_object(
        'subscription_id', v_subscription_id,
        'customer_id', v_customer_id,
        'user_id', coalesce(v_old.user_id, v_stripe_user),
        'status', v_stripe ->> 'status',
        'fields', v_fields,
        'result', v_result,
        'applied', coalesce((v_change ->> 'applied')::boolean, false),
        'reason', v_reason,
        'observed_at', v_observed_at,
        'last_event_created', v_old.last_event_created
    );
END
$function$;

COMMENT ON FUNCTION public.sync_stripe_subscription(jsonb, timestamptz, boolean) IS
'Contract: compares a subscription object as Stripe''s API returns it (either API shape, read by '
'_stripe_subscription_state) with billingdb''s row and, when apply is true, writes Stripe''s state through '
'apply_subscription_change with observed_at (when the listing was requested) as the event time and no event id. '
'Returns jsonb {subscription_id, customer_id, user_id, status (Stripe''s), fields, result, applied, reason, '
'observed_at, last_event_created (the watermark before)}; fields (the drift found, before any write): {field: '
'[billingdb''s, Stripe''s]} for each of '
'status, price_id, current_period_start, current_period_end, cancel_at_period_end, canceled_at, customer_id, user_id '
'that differs (a missing row: billingdb''s are null; user_id: the row''s user, else the customer''s link, against '
'the metadata''s user, else that link). result: in_sync (no drift, nothing written); drift (apply false); ignored '
'(unknown to billingdb and incomplete_expired, or canceled with its period over: nothing to keep); not_linked (no '
'user is linked to the customer and the metadata names none: nothing written); stale (apply, but the watermark, an '
'applied event, is at or after observed_at: nothing written); failed (BD001, BD004 or BD013 from the link or the '
'writer: reason says which, nothing written); else apply_subscription_change''s result (created, updated; stale or '
'refused_transition: nothing written). With apply and drift, a user the metadata names is first linked to the '
'customer (link_stripe_customer, as the webhook path does, applying its pending events); '
'an applied change moves the watermark to observed_at (so an older event arriving later is stale, a newer one '
'applies), is logged by the writer and as subscription_synced in activity_log {subscription_id, customer_id, '
'result, fields, observed_at, previous_event_created, previous_event_id}. Errors: 22023 when observed_at is null or '
'more than a minute in the future, apply is null, or the subscription is malformed (see '
'_stripe_subscription_state); nothing is written then.';

REVOKE ALL ON FUNCTION public.sync_stripe_subscription(jsonb, timestamptz, boolean) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.sync_stripe_subscription(jsonb, timestamptz, boolean) TO service_role;

-- sync_stripe_invoice: a paid subscription invoice from Stripe's API that has no allocation is found
-- and, when asked, allocated once through the webhook's allocation path.
CREATE OR REPLACE FUNCTION public.sync_stripe_invoice(
    invoice jsonb,
    observed_at timestamptz,
    apply boolean DEFAULT false
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_invoice constant jsonb := sync_stripe_invoice.invoice;
    v_observed_at constant timestamptz := sync_stripe_invoice.observed_at;
    v_apply constant boolean := sync_stripe_invoice.apply;
    v_invoice_id text;
    v_refs jsonb;
    v_paid_at timestamptz;
    v_metadata_user text;
    v_user_id text;
    v_outcome jsonb;
    v_allocation jsonb;
    v_result text;
    v_reason text;
    v_applied boolean := false;
    v_sqlstate text;
    v_message text;
BEGIN
    -- Arguments: when Stripe was read, apply, and an invoice object with its id and status.
    PERFORM billingdb._check_sync_arguments('sync_stripe_invoice', v_observed_at, v_apply);
    IF jsonb_typeof(v_invoice) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'sync_stripe_invoice: the invoice must be a JSON object (invoice=%)',
            coalesce(left(v_invoice::text, 80), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    v_invoice_id := billingdb._stripe_id(v_invoice -> 'id');
    PERFORM billingdb._check_stripe_id('sync_stripe_invoice', 'invoice.id', v_invoice_id, 'in_');
    IF v_invoice_id IS NULL THEN
        RAISE EXCEPTION 'sync_stripe_invoice: the invoice has no id (invoice=%)', left(v_invoice::text, 80)
            USING ERRCODE = '22023', HINT = 'Pass the invoice object (in_...) as Stripe''s API returns it.';
    END IF;
    IF jsonb_typeof(v_invoice -> 'status') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'sync_stripe_invoice: status must be a string (invoice_id=%, status=%)',
            v_invoice_id, coalesce(left((v_invoice -> 'status')::text, 40), 'NULL')
            USING ERRCODE = '22023';
    END IF;

    -- Its customer and subscription, in either API shape (basil+:
    -- parent.subscription_details), its payment time and the user its
    -- subscription's metadata names.
    v_refs := billingdb._stripe_event_refs(jsonb_build_object('data', jsonb_build_object('object', v_invoice)));
    PERFORM billingdb._check_stripe_id('sync_stripe_invoice', 'invoice.customer', v_refs ->> 'customer_id', 'cus_');
    PERFORM billingdb._check_stripe_id(
        'sync_stripe_invoice', 'invoice.subscription', v_refs ->> 'subscription_id', 'sub_'
    );
    v_paid_at := least(
        coalesce(
            billingdb._stripe_time(v_invoice #> '{status_transitions,paid_at}', 'invoice.status_transitions.paid_at'),
            billingdb._stripe_time(v_invoice -> 'created', 'invoice.created'),
            v_observed_at
        ),
        v_observed_at
    );
    v_metadata_user := billingdb._stripe_user_id(
        coalesce(v_invoice #> '{parent,subscription_details}', v_invoice -> 'subscription_details'),
        'invoice.subscription_details'
    );
    IF v_invoice ->> 'status' = 'paid' AND v_refs ->> 'subscription_id' IS NOT NULL AND v_refs ->> 'customer_id' IS NULL THEN
        RAISE EXCEPTION 'sync_stripe_invoice: the invoice names no customer (invoice_id=%)', v_invoice_id
            USING ERRCODE = '22023';
    END IF;
    SELECT c.user_id INTO v_user_id
    FROM billingdb.stripe_customers AS c
    WHERE c.stripe_customer_id = v_refs ->> 'customer_id';

    -- What it is: only a paid subscription invoice grants credits, once; one a
    -- webhook processed without an allocation (a plan change that grants
    -- nothing) or a sync already handled is done.
    IF v_invoice ->> 'status' <> 'paid' THEN
        v_result := 'not_paid';
    ELSIF v_refs ->> 'subscription_id' IS NULL THEN
        v_result := 'not_subscription';
    ELSIF EXISTS (
        SELECT FROM public.credit_transactions AS t WHERE t.reference = 'invoice:' || v_invoice_id
    ) THEN
        v_result := 'allocated';
    ELSIF EXISTS (
        SELECT FROM public.stripe_events AS e
        WHERE
            e.object_id = v_invoice_id
            AND e.event_type IN ('invoice.paid', 'invoice.payment_succeeded')
            AND e.status IN ('processed', 'ignored', 'stale')
    ) OR EXISTS (
        SELECT FROM billingdb.activity_log AS a
        WHERE a.user_id = v_user_id AND a.activity_type = 'invoice_synced' AND a.details ->> 'invoice_id' = v_invoice_id
    ) THEN
        v_result := 'handled';
    ELSIF coalesce(v_metadata_user, v_user_id) IS NULL THEN
        v_result := 'not_linked';
        v_reason := 'no user is linked to the customer and the subscription''s metadata names none: '
            'link them (billingdb customers link USER CUSTOMER), then sync again';
    ELSIF NOT v_apply THEN
        v_result := 'unallocated';
    ELSE
        -- The webhook's allocation path (the price's credits, the plan-change
        -- policy, at most once per invoice), as if invoice.paid arrived at the
        -- payment time; its metadata names no event (event_type billingdb.sync).
        -- A user the metadata names links the customer first, as the webhook would.
        BEGIN
            IF v_metadata_user IS NOT NULL THEN
                PERFORM public.link_stripe_customer(v_metadata_user, v_refs ->> 'customer_id');
            END IF;
            v_outcome := billingdb._apply_stripe_invoice_paid(
                jsonb_build_object(
                    'id', NULL, 'object', 'event', 'type', 'billingdb.sync',
                    'created', floor(extract(EPOCH FROM v_paid_at))::bigint,
                    'data', jsonb_build_object('object', v_invoice)
                ),
                v_refs
            );
            v_allocation := nullif(v_outcome #> '{detail,allocation}', 'null'::jsonb);
            v_applied := NOT coalesce((v_allocation ->> 'duplicate')::boolean, false);
            v_result := CASE WHEN v_allocation IS NULL THEN 'handled' ELSE 'allocated' END;
            v_reason := v_outcome #>> '{detail,reason}';
        EXCEPTION WHEN SQLSTATE '22023' OR SQLSTATE 'BD001' OR SQLSTATE 'BD003' OR SQLSTATE 'BD004'
            OR SQLSTATE 'BD012' OR SQLSTATE 'BD013' THEN
            GET STACKED DIAGNOSTICS v_sqlstate = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
            v_result := 'failed';
            v_reason := format('[%s] %s', v_sqlstate, v_message);
        END;
        IF v_applied THEN
            SELECT c.user_id INTO v_user_id
            FROM billingdb.stripe_customers AS c
            WHERE c.stripe_customer_id = v_refs ->> 'customer_id';
            INSERT INTO billingdb.activity_log (user_id, activity_type, details)
            VALUES (
                v_user_id, 'invoice_synced',
                jsonb_build_object(
                    'invoice_id', v_invoice_id, 'subscription_id', v_refs ->> 'subscription_id',
                    'customer_id', v_refs ->> 'customer_id', 'observed_at', v_observed_at, 'paid_at', v_paid_at,
                    'result', v_result, 'transaction_id', v_allocation -> 'transaction_id',
                    'credits', v_allocation -> 'credits', 'detail', v_outcome -> 'detail'
                )
            );
        END IF;
    END IF;

    RETURN jsonb_build_object(
        'invoice_id', v_invoice_id,
        'subscription_id', v_refs ->> 'subscription_id',
        'customer_id', v_refs ->> 'customer_id',
        'user_id', coalesce(v_user_id, v_metadata_user),
        'status', v_invoice ->> 'status',
        'billing_reason', v_invoice ->> 'billing_reason',
        'amount_paid', v_invoice -> 'amount_paid',
        'currency', v_invoice ->> 'currency',
        'paid_at', v_paid_at,
        'result', v_result,
        'applied', v_applied,
        'reason', v_reason,
        'allocation', v_allocation
    );
END
$function$;

COMMENT ON FUNCTION public.sync_stripe_invoice(jsonb, timestamptz, boolean) IS
'Contract: checks an invoice object as Stripe''s API returns it (either API shape: the subscription from '
'parent.subscription_details since 2025-03-31.basil, invoice.subscription before) against the ledger and, when '
'apply is true, allocates a paid subscription invoice that has none through the webhook''s allocation path '
'(_apply_stripe_invoice_paid: the price''s credits, the plan-change policy, add_subscription_credits at most once '
'per invoice) as if invoice.paid had arrived at its payment time (status_transitions.paid_at, else created, never '
'after observed_at); the allocation''s metadata has stripe_event_id null and event_type billingdb.sync. Returns '
'jsonb {invoice_id, subscription_id, customer_id, user_id, status, billing_reason, amount_paid, currency, paid_at, '
'result, applied, reason, allocation}. result: not_paid; not_subscription; allocated (an allocation exists, or '
'applied true: made now, allocation is add_subscription_credits''s result); handled (no allocation is due: a '
'webhook processed the invoice without one, or a sync did, e.g. a plan change that grants nothing); unallocated '
'(paid, no allocation, apply false); not_linked (no user is linked to the customer and the metadata names none); '
'failed (22023, BD001, BD003, BD004, BD012 or BD013 from the allocation path: reason says which, nothing written). '
'With apply, a user the subscription''s metadata names is first linked to the customer; an applied allocation is '
'logged as invoice_synced in activity_log. Idempotent: a second call finds it allocated (or handled) and writes '
'nothing. Errors: 22023 when observed_at is null or more than a minute in the future, apply is null, or the '
'invoice is not an object, has no id (in_), no string status, a malformed customer (cus_) or subscription (sub_) '
'id, a paid subscription invoice without a customer, a time that is not unix seconds or an unusable metadata user '
'id; nothing is written then.';

REVOKE ALL ON FUNCTION public.sync_stripe_invoice(jsonb, timestamptz, boolean) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.sync_stripe_invoice(jsonb, timestamptz, boolean) TO service_role;

CREATE OR REPLACE FUNCTION billingdb._apply_stripe_invoice_paid(event jsonb, refs jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_event constant jsonb := _apply_stripe_invoice_paid.event;
    v_invoice constant jsonb := _apply_stripe_invoice_paid.event #> '{data,object}';
    v_refs constant jsonb := _apply_stripe_invoice_paid.refs;
    v_invoice_id constant text := billingdb._stripe_id(_apply_stripe_invoice_paid.event #> '{data,object,id}');
    v_reason constant text := _apply_stripe_invoice_paid.event #>> '{data,object,billing_reason}';
    v_price jsonb;
    v_credits integer;
    v_policy text;
    v_previous_price text;
    v_previous_credits integer;
    v_sub billingdb.subscriptions;
    v_allocation jsonb;
BEGIN
    -- Only subscription invoices grant credits.
    IF v_refs ->> 'subscription_id' IS NULL THEN
        RETURN jsonb_build_object(
            'status', 'ignored',
            'detail', jsonb_build_object('reason', 'not a subscription invoice', 'invoice_id', v_invoice_id)
        );
    END IF;

    -- The credits for the invoice's price (BD003 when unknown: failed, retried later).
    v_price := billingdb._stripe_invoice_credits(v_invoice);
    v_credits := (v_price ->> 'credits')::integer;

    -- A plan change paid mid-period (billing_reason subscription_update) grants
    -- what the new plan's policy says: the difference from the plan of the
    -- subscription's previous allocation (the default; nothing for a
    -- downgrade, whose credits come with the next renewal), the new plan's full
    -- credits, or nothing.
    IF v_reason = 'subscription_update' THEN
        -- The invoice bills the new price: when no newer subscription event said
        -- otherwise, the subscription takes it now (Stripe may send the update
        -- later, or never: an emulator does not), logged as a plan change.
        SELECT s.* INTO v_sub FROM billingdb.subscriptions AS s WHERE s.subscription_id = v_refs ->> 'subscription_id';
        IF
            FOUND
            AND v_sub.price_id IS DISTINCT FROM v_price ->> 'price_id'
            AND (v_sub.last_event_created IS NULL OR to_timestamp((v_event ->> 'created')::bigint) > v_sub.last_event_created)
        THEN
            PERFORM public.apply_subscription_change(
                v_sub.subscription_id, NULL, v_sub.stripe_customer_id, v_sub.status, v_price ->> 'price_id',
                v_sub.current_period_start, v_sub.current_period_end, v_sub.cancel_at_period_end, v_sub.canceled_at,
                NULL, NULL
            );
        END IF;
        SELECT p.change_credits INTO v_policy FROM billingdb.plans AS p WHERE p.price_id = v_price ->> 'price_id';
        v_policy := coalesce(v_policy, 'difference');
        SELECT t.metadata ->> 'price_id', coalesce(p.credits_per_period, t.amount)
        INTO v_previous_price, v_previous_credits
        FROM public.credit_transactions AS t
        LEFT JOIN billingdb.plans AS p ON (t.metadata ->> 'price_id') = p.price_id
        WHERE
            t.transaction_type = 'allocation'
            AND t.metadata ->> 'subscription_id' = v_refs ->> 'subscription_id'
            AND t.metadata ->> 'invoice_id' IS DISTINCT FROM v_invoice_id
        ORDER BY t.id DESC
        LIMIT 1;
        v_credits := CASE v_policy
            WHEN 'full' THEN v_credits
            WHEN 'none' THEN 0
            ELSE greatest(0, v_credits - coalesce(v_previous_credits, 0))
        END;
        IF v_credits = 0 THEN
            RETURN jsonb_build_object(
                'status', 'processed',
                'detail', jsonb_build_object(
                    'action', 'credits', 'invoice_id', v_invoice_id, 'billing_reason', v_reason,
                    'price_id', v_price ->> 'price_id', 'previous_price_id', v_previous_price, 'policy', v_policy,
                    'allocation', NULL,
                    'reason', 'plan change: no credits now (a downgrade, or the plan''s policy)'
                )
            );
        END IF;
    END IF;

    -- At most once per invoice: invoice.paid and invoice.payment_succeeded both land here.
    v_allocation := public.add_subscription_credits(
        customer_id => v_refs ->> 'customer_id',
        invoice_id => v_invoice_id,
        subscription_id => v_refs ->> 'subscription_id',
        credits => v_credits,
        description => format(
            'Subscription credits (%s) for invoice %s', coalesce(v_reason, 'unknown reason'), v_invoice_id
        ),
        metadata => jsonb_build_object(
            'billing_reason', v_reason,
            'price_id', v_price ->> 'price_id',
            'credits_source', v_price ->> 'source',
            'change_policy', v_policy,
            'previous_price_id', v_previous_price,
            -- What a later refund or dispute needs to find this allocation and size its claw-back.
            'charge_id', billingdb._stripe_id(v_invoice -> 'charge'),
            'payment_intent_id', coalesce(
                billingdb._stripe_id(v_invoice -> 'payment_intent'),
                billingdb._stripe_id(v_invoice #> '{payments,data,0,payment,payment_intent}')
            ),
            'amount_paid', v_invoice -> 'amount_paid',
            'currency', v_invoice ->> 'currency',
            'stripe_event_id', v_event ->> 'id',
            'event_type', v_event ->> 'type'
        )
    );

    RETURN jsonb_build_object(
        'status', 'processed',
        'detail', jsonb_build_object(
            'action', 'credits',
            'invoice_id', v_invoice_id,
            'billing_reason', v_reason,
            'price_id', v_price ->> 'price_id',
            'credits_source', v_price ->> 'source',
            'policy', v_policy,
            'allocation', v_allocation
        )
    );
END
$function$;

COMMENT ON FUNCTION billingdb._apply_stripe_invoice_paid(jsonb, jsonb) IS
'Internal. Contract: invoice.paid and invoice.payment_succeeded (refs: the event''s _stripe_event_refs): allocates the credits of the invoice''s price '
'(_stripe_invoice_credits) with add_subscription_credits, at most once per invoice whichever event comes first; the '
'ledger entry''s metadata records billing_reason (subscription_create, subscription_cycle, subscription_update, ...), '
'price_id, credits_source and the event. A subscription_update invoice (a plan change paid mid-period) grants what '
'the new plan''s change_credits says: difference (the new plan''s credits less those of the plan of the '
'subscription''s previous allocation, never below 0: a downgrade grants nothing now), full, or none; with 0 '
'credits nothing is allocated and the result is processed with allocation null. Such an invoice also gives the '
'subscription its new price (apply_subscription_change, authoritative) unless a subscription event newer than the '
'invoice''s event was applied. Returns jsonb {status, detail}: processed with detail {action: credits, '
'invoice_id, billing_reason, price_id, credits_source, allocation: add_subscription_credits''s result (duplicate true '
'for the second event of an invoice)}; ignored with detail {reason, invoice_id} for an invoice without a '
'subscription. Errors: BD003 for an unknown price without metadata.credits; those of add_subscription_credits.';

REVOKE ALL ON FUNCTION billingdb._apply_stripe_invoice_paid(jsonb, jsonb) FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION billingdb._apply_stripe_invoice_failed(event jsonb, refs jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_event constant jsonb := _apply_stripe_invoice_failed.event;
    v_invoice constant jsonb := _apply_stripe_invoice_failed.event #> '{data,object}';
    v_refs constant jsonb := _apply_stripe_invoice_failed.refs;
    v_created constant timestamptz := to_timestamp((_apply_stripe_invoice_failed.event ->> 'created')::bigint);
    v_user_id text;
    v_sub billingdb.subscriptions;
    v_change jsonb;
    v_status text := 'processed';
BEGIN
    -- Only subscription invoices change a subscription.
    IF v_refs ->> 'subscription_id' IS NULL THEN
        RETURN jsonb_build_object(
            'status', 'ignored',
            'detail', jsonb_build_object('reason', 'not a subscription invoice', 'invoice_id', v_refs ->> 'object_id')
        );
    END IF;
    SELECT c.user_id INTO STRICT v_user_id
    FROM billingdb.stripe_customers AS c
    WHERE c.stripe_customer_id = v_refs ->> 'customer_id';

    -- The subscription goes past_due, unless a newer event already moved it
    -- (its watermark is after this event): then this failure is stale. The
    -- event is not a full snapshot of the subscription, so it is applied as an
    -- authoritative change (the watermark stays with the subscription events).
    SELECT s.* INTO v_sub
    FROM billingdb.subscriptions AS s
    WHERE s.subscription_id = v_refs ->> 'subscription_id';
    IF NOT FOUND THEN
        v_change := NULL;
    ELSIF v_sub.last_event_created > v_created THEN
        v_status := 'stale';
        v_change := jsonb_build_object(
            'applied', false, 'result', 'stale', 'from_status', v_sub.status, 'to_status', 'past_due',
            'subscription_id', v_sub.subscription_id, 'user_id', v_sub.user_id
        );
    ELSE
        v_change := public.apply_subscription_change(
            subscription_id => v_sub.subscription_id,
            user_id => v_sub.user_id,
            customer_id => v_refs ->> 'customer_id',
            status => 'past_due',
            price_id => v_sub.price_id,
            current_period_start => v_sub.current_period_start,
            current_period_end => v_sub.current_period_end,
            cancel_at_period_end => v_sub.cancel_at_period_end,
            canceled_at => v_sub.canceled_at
        );
        IF v_change ->> 'result' IN ('stale', 'refused_transition') THEN
            v_status := 'stale';
        END IF;
    END IF;

    -- The failure is logged in every case, for support.
    INSERT INTO billingdb.activity_log (user_id, activity_type, details)
    VALUES (
        v_user_id, 'payment_failed',
        jsonb_build_object(
            'invoice_id', v_refs ->> 'object_id',
            'subscription_id', v_refs ->> 'subscription_id',
            'customer_id', v_refs ->> 'customer_id',
            'billing_reason', v_invoice ->> 'billing_reason',
            'amount_due', v_invoice -> 'amount_due',
            'attempt_count', v_invoice -> 'attempt_count',
            'next_payment_attempt', v_invoice -> 'next_payment_attempt',
            'stripe_event_id', v_event ->> 'id',
            'subscription_change', v_change
        )
    );

    RETURN jsonb_build_object(
        'status', v_status,
        'detail', jsonb_build_object(
            'action', 'payment_failed',
            'invoice_id', v_refs ->> 'object_id',
            'subscription_id', v_refs ->> 'subscription_id',
            'subscription', v_change
        )
    );
END
$function$;

COMMENT ON FUNCTION billingdb._apply_stripe_invoice_failed(jsonb, jsonb) IS
'Internal. Contract: invoice.payment_failed (refs: the event''s _stripe_event_refs): moves the invoice''s subscription to past_due through '
'apply_subscription_change (as an authoritative change: the event is not a subscription snapshot, so the '
'subscription''s watermark is kept) unless the subscription''s watermark is newer than the event (stale), and logs '
'payment_failed in activity_log (invoice, subscription, attempt_count, next_payment_attempt, the change). A '
'subscription not yet known is left to its own events (they carry past_due). Returns jsonb {status, detail}: '
'processed or stale with detail {action: payment_failed, invoice_id, subscription_id, subscription: the change or '
'null}; ignored for an invoice without a subscription. The customer must be linked. Errors: those of '
'apply_subscription_change.';

REVOKE ALL ON FUNCTION billingdb._apply_stripe_invoice_failed(jsonb, jsonb) FROM public, anon, authenticated;

-- _apply_stripe_charge_event: money going back takes back the credits it paid for.
CREATE OR REPLACE FUNCTION billingdb._apply_stripe_charge_event(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_type constant text := _apply_stripe_charge_event.event ->> 'type';
    v_object constant jsonb := _apply_stripe_charge_event.event #> '{data,object}';
    v_dispute_id text;
    v_charge_id text;
    v_payment_intent_id text;
    v_invoice_id text;
    v_allocation public.credit_transactions;
    v_paid numeric;
    v_refunded numeric;
    v_result jsonb;
BEGIN
    -- The charge (or the dispute and its charge), and what names the invoice:
    -- charge.invoice before 2025-03-31.basil, the payment intent since.
    IF v_type = 'charge.refunded' THEN
        v_charge_id := billingdb._stripe_id(v_object -> 'id');
    ELSE
        v_dispute_id := billingdb._stripe_id(v_object -> 'id');
        v_charge_id := billingdb._stripe_id(v_object -> 'charge');
    END IF;
    v_payment_intent_id := billingdb._stripe_id(v_object -> 'payment_intent');
    v_invoice_id := billingdb._stripe_id(v_object -> 'invoice');

    -- The allocation that charge paid for.
    SELECT t.* INTO v_allocation
    FROM public.credit_transactions AS t
    WHERE
        t.transaction_type = 'allocation'
        AND (
            (v_invoice_id IS NOT NULL AND (t.metadata ->> 'invoice_id') = v_invoice_id)
            OR (v_charge_id IS NOT NULL AND (t.metadata ->> 'charge_id') = v_charge_id)
            OR (v_payment_intent_id IS NOT NULL AND (t.metadata ->> 'payment_intent_id') = v_payment_intent_id)
        )
    ORDER BY t.id
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN jsonb_build_object(
            'status', 'ignored',
            'detail', jsonb_build_object(
                'reason', 'no allocation of billingdb was paid by this charge', 'charge_id', v_charge_id,
                'dispute_id', v_dispute_id, 'invoice_id', v_invoice_id, 'payment_intent_id', v_payment_intent_id
            )
        );
    END IF;

    -- A refund: the credits in proportion to the refunded share of what was paid,
    -- from Stripe's cumulative amount_refunded (a partial refund, then another).
    IF v_type = 'charge.refunded' THEN
        v_refunded := (v_object ->> 'amount_refunded')::numeric;
        v_paid := coalesce((v_allocation.metadata ->> 'amount_paid')::numeric, (v_object ->> 'amount')::numeric);
        IF v_refunded IS NULL OR v_refunded < 0 OR v_refunded > (v_object ->> 'amount')::numeric THEN
            RAISE EXCEPTION '_apply_stripe_charge_event: amount_refunded must be between 0 and the charge''s amount '
                '(charge_id=%, amount=%, amount_refunded=%)',
                v_charge_id, v_object ->> 'amount', v_object ->> 'amount_refunded'
                USING ERRCODE = '22023';
        END IF;
        v_result := billingdb._claw_back_credits(
            v_allocation.id, 'refund', v_charge_id,
            -- Integer arithmetic: a third of 999 cents takes exactly a third of 30 credits.
            CASE
                WHEN v_paid > 0 THEN div(v_allocation.amount::numeric * least(v_refunded, v_paid), v_paid)::integer
                ELSE 0
            END
        );
    -- A dispute opened or its funds withdrawn: hold back the invoice's credits.
    ELSIF v_type IN ('charge.dispute.created', 'charge.dispute.funds_withdrawn') THEN
        v_result := billingdb._claw_back_credits(v_allocation.id, 'dispute', v_dispute_id, v_allocation.amount);
    -- Won (funds reinstated, or closed as won): give back exactly what it took.
    ELSIF v_type = 'charge.dispute.funds_reinstated' OR v_object ->> 'status' = 'won' THEN
        v_result := billingdb._reinstate_credits(v_allocation.id, v_dispute_id);
    ELSE
        v_result := jsonb_build_object('reason', 'dispute closed: the credits taken back stay taken back');
    END IF;

    RETURN jsonb_build_object(
        'status', 'processed',
        'detail', jsonb_build_object(
            'action', CASE WHEN v_type = 'charge.refunded' THEN 'refund' ELSE 'dispute' END,
            'allocation_id', v_allocation.id, 'invoice_id', v_allocation.metadata ->> 'invoice_id',
            'charge_id', v_charge_id, 'dispute_id', v_dispute_id, 'result', v_result
        )
    );
END
$function$;

COMMENT ON FUNCTION billingdb._apply_stripe_charge_event(jsonb) IS
'Internal. Contract: charge.refunded and charge.dispute.* in either API shape. Finds the allocation the charge paid '
'for (by the charge''s invoice before basil, else by the charge or payment intent recorded with the allocation); '
'none: ignored with a reason. charge.refunded takes back floor(credits * amount_refunded / amount_paid) in total '
'(cumulative: a second partial refund takes only the rest); charge.dispute.created and funds_withdrawn take back the '
'invoice''s credits; funds_reinstated, or closed with status won, gives back exactly what the dispute took; closed '
'otherwise keeps it. Never below zero: the rest is a shortfall (_claw_back_credits). Returns jsonb {status, detail}. '
'Errors: 22023 when amount_refunded is missing, negative or above the charge''s amount.';

REVOKE ALL ON FUNCTION billingdb._apply_stripe_charge_event(jsonb) FROM public, anon, authenticated;

-- _dispatch_stripe_event: applies an event by type inside its own sub-transaction, so that
-- process_stripe_event can dispatch a new event before recording it (one INSERT with the outcome).
CREATE OR REPLACE FUNCTION billingdb._dispatch_stripe_event(event jsonb, refs jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_event constant jsonb := _dispatch_stripe_event.event;
    v_type constant text := _dispatch_stripe_event.event ->> 'type';
    v_customer_id text;
    v_user_id text;
    v_sqlstate text;
    v_message text;
    v_hint text;
BEGIN
    -- A sub-transaction: on any error the handler's effects roll back and the
    -- error is returned as the outcome (failed) instead of raised.
    BEGIN
        -- The user the event's object names in its metadata (a customer's, a
        -- subscription's, an invoice's subscription details, in either API
        -- shape) links its customer to that user, as a Checkout session does:
        -- no Checkout is needed. A link that contradicts an existing one is
        -- refused (BD004) and the event fails; nothing is relinked.
        IF v_type IN (
            'customer.created', 'customer.updated',
            'customer.subscription.created', 'customer.subscription.updated', 'customer.subscription.deleted',
            'customer.subscription.paused', 'customer.subscription.resumed',
            'invoice.paid', 'invoice.payment_succeeded', 'invoice.payment_failed'
        ) THEN
            v_user_id := CASE
                WHEN v_type LIKE 'invoice.%' THEN billingdb._stripe_user_id(
                    coalesce(
                        v_event #> '{data,object,parent,subscription_details}',
                        v_event #> '{data,object,subscription_details}'
                    ),
                    'invoice.subscription_details'
                )
                WHEN v_type LIKE 'customer.subscription.%'
                    THEN billingdb._stripe_user_id(v_event #> '{data,object}', 'subscription')
                ELSE billingdb._stripe_user_id(v_event #> '{data,object}', 'customer')
            END;
            v_customer_id := _dispatch_stripe_event.refs ->> 'customer_id';
            IF v_user_id IS NOT NULL AND v_customer_id IS NOT NULL THEN
                PERFORM public.link_stripe_customer(v_user_id, v_customer_id);
            END IF;
        END IF;

        -- Subscription and invoice events belong to a user through the
        -- customer: unknown customer, park the event until the link arrives.
        IF v_type IN (
            'customer.subscription.created', 'customer.subscription.updated', 'customer.subscription.deleted',
            'customer.subscription.paused', 'customer.subscription.resumed',
            'invoice.paid', 'invoice.payment_succeeded', 'invoice.payment_failed'
        ) THEN
            -- v_customer_id was read above (these types are among those).
            IF v_customer_id IS NULL THEN
                RAISE EXCEPTION '_dispatch_stripe_event: the event names no customer (event_id=%, type=%)',
                    v_event ->> 'id', v_type
                    USING ERRCODE = '22023';
            END IF;
            IF NOT EXISTS (SELECT FROM billingdb.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id) THEN
                RETURN jsonb_build_object(
                    'status', 'pending',
                    'detail', jsonb_build_object('reason', 'customer not linked to a user', 'customer_id', v_customer_id)
                );
            END IF;
        END IF;

        -- One handler per type; any other type is recorded and ignored.
        RETURN CASE
            WHEN v_type IN (
                'customer.subscription.created', 'customer.subscription.updated', 'customer.subscription.deleted',
                'customer.subscription.paused', 'customer.subscription.resumed'
            ) THEN billingdb._apply_stripe_subscription_event(v_event)
            WHEN v_type IN ('invoice.paid', 'invoice.payment_succeeded')
                THEN billingdb._apply_stripe_invoice_paid(v_event, _dispatch_stripe_event.refs)
            WHEN v_type = 'invoice.payment_failed'
                THEN billingdb._apply_stripe_invoice_failed(v_event, _dispatch_stripe_event.refs)
            WHEN v_type = 'checkout.session.completed' THEN billingdb._apply_stripe_checkout_completed(v_event)
            WHEN v_type IN (
                'charge.refunded', 'charge.dispute.created', 'charge.dispute.funds_withdrawn',
                'charge.dispute.funds_reinstated', 'charge.dispute.closed'
            ) THEN billingdb._apply_stripe_charge_event(v_event)
            WHEN v_type IN ('customer.created', 'customer.updated') THEN jsonb_build_object(
                'status', CASE WHEN v_user_id IS NULL THEN 'ignored' ELSE 'processed' END,
                'detail', CASE
                    WHEN v_user_id IS NULL THEN jsonb_build_object(
                        'reason', 'the customer''s metadata names no user', 'customer_id', v_customer_id
                    )
                    ELSE jsonb_build_object('action', 'link', 'user_id', v_user_id, 'customer_id', v_customer_id)
                END
            )
            ELSE jsonb_build_object(
                'status', 'ignored', 'detail', jsonb_build_object('reason', 'event type not handled', 'type', v_type)
            )
        END;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS
            v_sqlstate = RETURNED_SQLSTATE,
            v_message = MESSAGE_TEXT,
            v_hint = PG_EXCEPTION_HINT;
        RETURN jsonb_build_object(
            'status', 'failed',
            'error', format('[%s] %s', v_sqlstate, v_message),
            'detail', jsonb_build_object('sqlstate', v_sqlstate, 'error', v_message, 'hint', nullif(v_hint, ''))
        );
    END;
END
$function$;

COMMENT ON FUNCTION billingdb._dispatch_stripe_event(jsonb, jsonb) IS
'Internal. Contract: applies one validated event (refs: its _stripe_event_refs, read once by the caller) by type inside a sub-transaction and returns jsonb {status, '
'detail} (and error when failed): customer.subscription.created|updated|deleted|paused|resumed -> '
'_apply_stripe_subscription_event; invoice.paid, invoice.payment_succeeded -> _apply_stripe_invoice_paid; '
'invoice.payment_failed -> _apply_stripe_invoice_failed; checkout.session.completed -> '
'_apply_stripe_checkout_completed; charge.refunded, charge.dispute.created|funds_withdrawn|funds_reinstated|closed '
'-> _apply_stripe_charge_event; customer.created|updated -> processed {action: link} when the customer''s '
'metadata names a user, else ignored; any other type: ignored {reason, type}. First, a customer, subscription or '
'invoice event whose object names a user in its metadata (key: the setting user_id_metadata_key; for an invoice, its '
'subscription_details) links the customer to that user (link_stripe_customer: BD004 when that contradicts a link; '
'22023 when the value is not a usable user id), which applies the customer''s pending events. A subscription or invoice event whose '
'customer no user is linked to is pending {reason, customer_id} and changes nothing. Never raises: on any error '
'(those of the handlers; 22023 when such an event names no customer) the effects roll back and the result is status '
'failed, error ''[SQLSTATE] message'', detail {sqlstate, error, hint}.';

REVOKE ALL ON FUNCTION billingdb._dispatch_stripe_event(jsonb, jsonb) FROM public, anon, authenticated;

-- _attempt_stripe_event: dispatches a stored event again and records its outcome on the row.
CREATE OR REPLACE FUNCTION billingdb._attempt_stripe_event(id bigint)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_id constant bigint := _attempt_stripe_event.id;
    v_row public.stripe_events;
    v_outcome jsonb;
    v_status text;
    v_detail jsonb;
BEGIN
    -- The caller holds the row lock. Mark it in progress, so that pending
    -- events applied meanwhile in this transaction (a link) skip it.
    SELECT e.* INTO STRICT v_row FROM public.stripe_events AS e WHERE e.id = v_id;
    IF v_row.status <> 'received' THEN
        UPDATE public.stripe_events AS e
        SET status = 'received'
        WHERE e.id = v_id;
    END IF;

    -- Apply it (a failure rolls back its effects and comes back as failed).
    v_outcome := billingdb._dispatch_stripe_event(v_row.payload, billingdb._stripe_event_refs(v_row.payload));
    v_status := v_outcome ->> 'status';
    v_detail := coalesce(v_outcome -> 'detail', '{}'::jsonb);
    IF v_status = 'failed' THEN
        v_detail := v_detail || jsonb_build_object('retry_count', v_row.retry_count + 1);
    END IF;

    -- Record the outcome; it commits together with the effects.
    UPDATE public.stripe_events AS e
    SET
        status = v_status,
        processed = v_status IN ('processed', 'ignored', 'stale'),
        processed_at = CASE WHEN v_status IN ('processed', 'ignored', 'stale') THEN now() END,
        error = v_outcome ->> 'error',
        retry_count = e.retry_count + CASE WHEN v_status = 'failed' THEN 1 ELSE 0 END,
        detail = v_detail
    WHERE e.id = v_id;

    RETURN jsonb_build_object('event_id', v_row.stripe_event_id, 'status', v_status, 'detail', v_detail);
END
$function$;

COMMENT ON FUNCTION billingdb._attempt_stripe_event(bigint) IS
'Internal. Contract: processes the stored stripe_events row id again (a failed or pending event; the caller holds '
'its lock and its customer''s lock) from its payload with _dispatch_stripe_event, then the row records the outcome '
'in the same transaction as the effects: status; processed (true for processed, ignored, stale) and processed_at; '
'detail. On any error the effects roll back and the row records status failed, error ''[SQLSTATE] message'' and '
'retry_count + 1. Returns jsonb {event_id, status, detail}; a failure''s detail is {sqlstate, error, hint, '
'retry_count}.';

REVOKE ALL ON FUNCTION billingdb._attempt_stripe_event(bigint) FROM public, anon, authenticated;

-- process_stripe_event: a new event is applied first and then recorded with its
-- outcome in one INSERT; the event's advisory lock serialises deliveries of one event.
CREATE OR REPLACE FUNCTION public.process_stripe_event(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_event constant jsonb := process_stripe_event.event;
    v_event_id text;
    v_refs jsonb;
    v_id bigint;
    v_row public.stripe_events;
    v_outcome jsonb;
    v_status text;
    v_detail jsonb;
BEGIN
    -- The envelope: an object with a non-empty id and type, created in unix
    -- seconds, data.object an object, api_version a string when present.
    IF v_event IS NULL OR jsonb_typeof(v_event) <> 'object' THEN
        RAISE EXCEPTION 'process_stripe_event: the event must be a JSON object (event=%)',
            coalesce(left(v_event::text, 80), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    v_event_id := v_event ->> 'id';
    IF jsonb_typeof(v_event -> 'id') IS DISTINCT FROM 'string' OR btrim(v_event_id) = '' OR length(v_event_id) > 255 THEN
        RAISE EXCEPTION 'process_stripe_event: id must be a non-empty string of at most 255 characters (id=%)',
            coalesce(left((v_event -> 'id')::text, 80), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the whole Stripe event (evt_...), not its data.object.';
    END IF;
    IF
        jsonb_typeof(v_event -> 'type') IS DISTINCT FROM 'string'
        OR btrim(v_event ->> 'type') = ''
        OR length(v_event ->> 'type') > 255
    THEN
        RAISE EXCEPTION 'process_stripe_event: type must be a non-empty string of at most 255 characters '
            '(event_id=%, type=%)',
            v_event_id, coalesce(left((v_event -> 'type')::text, 80), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    -- Unix seconds before the year 10000: every client can read the times made of it.
    IF
        jsonb_typeof(v_event -> 'created') IS DISTINCT FROM 'number' OR (v_event ->> 'created') !~ '^[0-9]{1,12}$'
        OR (v_event ->> 'created')::bigint >= 253402300800
    THEN
        RAISE EXCEPTION 'process_stripe_event: created must be a non-negative integer before the year 10000 '
            '(event_id=%, created=%)',
            v_event_id, coalesce(left((v_event -> 'created')::text, 80), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe''s created is unix seconds.';
    END IF;
    IF jsonb_typeof(v_event #> '{data,object}') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'process_stripe_event: data.object must be a JSON object (event_id=%)', v_event_id
            USING ERRCODE = '22023';
    END IF;
    IF
        coalesce(jsonb_typeof(v_event -> 'api_version'), 'null') NOT IN ('string', 'null')
        OR length(v_event ->> 'api_version') > 64
    THEN
        RAISE EXCEPTION 'process_stripe_event: api_version must be a string of at most 64 characters or null '
            '(event_id=%)', v_event_id
            USING ERRCODE = '22023';
    END IF;

    -- The ids the event is filed under (customer, subscription, object): Stripe
    -- ids, at most 255 characters each (they are indexed).
    v_refs := billingdb._stripe_event_refs(v_event);
    IF
        length(v_refs ->> 'customer_id') > 255
        OR length(v_refs ->> 'subscription_id') > 255
        OR length(v_refs ->> 'object_id') > 255
    THEN
        RAISE EXCEPTION 'process_stripe_event: an id in data.object is longer than 255 characters '
            '(event_id=%, object_id=%, customer_id=%, subscription_id=%)',
            v_event_id, left(v_refs ->> 'object_id', 40), left(v_refs ->> 'customer_id', 40),
            left(v_refs ->> 'subscription_id', 40)
            USING ERRCODE = '22023';
    END IF;

    -- The customer's lock first (before the event's): an event either sees its
    -- customer's link or is pending before the link looks for pending ones.
    IF v_refs ->> 'customer_id' IS NOT NULL THEN
        PERFORM billingdb._lock_stripe_customer(v_refs ->> 'customer_id');
    END IF;

    -- Then the event's own lock: a concurrent delivery of the same event waits
    -- here until the first one commits, and then finds its row.
    PERFORM billingdb._lock_stripe_event(v_event_id);

    -- Seen before and done (processed, ignored, stale): a duplicate, nothing changes.
    -- Seen before and not done (failed, pending): Stripe's retry processes it again.
    SELECT e.* INTO v_row FROM public.stripe_events AS e WHERE e.stripe_event_id = v_event_id FOR UPDATE;
    IF FOUND THEN
        IF v_row.processed THEN
            RETURN jsonb_build_object(
                'event_id', v_event_id,
                'status', 'duplicate',
                'detail', jsonb_build_object(
                    'first_status', v_row.status, 'processed_at', v_row.processed_at, 'retry_count', v_row.retry_count
                )
            );
        END IF;
        RETURN billingdb._attempt_stripe_event(v_row.id);
    END IF;

    -- New: apply it (a failure rolls back its effects and comes back as
    -- failed), then record it once with its outcome, in the same transaction.
    v_outcome := billingdb._dispatch_stripe_event(v_event, v_refs);
    v_status := v_outcome ->> 'status';
    v_detail := coalesce(v_outcome -> 'detail', '{}'::jsonb);
    IF v_status = 'failed' THEN
        v_detail := v_detail || jsonb_build_object('retry_count', 1);
    END IF;
    INSERT INTO public.stripe_events AS e (
        stripe_event_id, event_type, object_id, payload, status, processed, processed_at, error, retry_count, detail,
        event_created, api_version, livemode, customer_id, subscription_id
    )
    VALUES (
        v_event_id, v_event ->> 'type', v_refs ->> 'object_id', v_event, v_status,
        v_status IN ('processed', 'ignored', 'stale'),
        CASE WHEN v_status IN ('processed', 'ignored', 'stale') THEN now() END,
        v_outcome ->> 'error', CASE WHEN v_status = 'failed' THEN 1 ELSE 0 END, v_detail,
        to_timestamp((v_event ->> 'created')::bigint), v_event ->> 'api_version',
        CASE WHEN jsonb_typeof(v_event -> 'livemode') = 'boolean' THEN (v_event ->> 'livemode')::boolean END,
        v_refs ->> 'customer_id', v_refs ->> 'subscription_id'
    )
    ON CONFLICT ON CONSTRAINT stripe_events_stripe_event_id_key DO NOTHING
    RETURNING e.id INTO v_id;
    IF v_id IS NULL THEN
        -- Only a writer that bypasses process_stripe_event's locks gets here:
        -- undo the effects; the caller may deliver the event again.
        RAISE EXCEPTION 'process_stripe_event: event recorded concurrently (event_id=%)', v_event_id
            USING ERRCODE = '40001', HINT = 'Deliver the event again: it will be a duplicate.';
    END IF;

    RETURN jsonb_build_object('event_id', v_event_id, 'status', v_status, 'detail', v_detail);
END
$function$;

COMMENT ON FUNCTION public.process_stripe_event(jsonb) IS
'Contract: records and applies one Stripe webhook event (the whole envelope) exactly once. Returns jsonb {event_id, '
'status, detail}. status: processed (applied; detail.action subscription | credits | payment_failed | link with the '
'applied function''s result), duplicate (this event id was already done; nothing changes; detail {first_status, '
'processed_at, retry_count}), ignored (a type billingdb does not handle, or nothing to do: detail.reason), stale '
'(older than the subscription''s applied state: detail.subscription), pending (no user is linked to the event''s '
'customer yet: detail {reason, customer_id}; applied automatically, in order of created then id, when the customer '
'is linked), failed (the effects rolled back; detail {sqlstate, error, hint, retry_count}; the row keeps error and '
'retry_count; a new delivery or retry_stripe_event processes it again). Handled types: customer.subscription.created, '
'updated, deleted, paused, resumed (apply_subscription_change, watermark = the event''s created and id: strictly '
'newer applies, older is stale, a same-second change applies only if the state machine allows it); invoice.paid and '
'invoice.payment_succeeded (add_subscription_credits once per invoice, credits from plans by price, else the '
'payload''s metadata.credits; billing_reason recorded; unknown price: failed with BD003); invoice.payment_failed '
'(subscription to past_due, activity logged); checkout.session.completed (client_reference_id user <-> customer). '
'Reads both API shapes (before and since 2025-03-31.basil). The event''s effects and its processed mark commit '
'together; concurrent deliveries of one event apply it once. Errors (nothing recorded): 22023 when the event is not '
'an object or id, type (non-empty strings), created (non-negative integer), data.object (object) or api_version '
'(string or null) is missing or of the wrong type.';

REVOKE ALL ON FUNCTION public.process_stripe_event(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.process_stripe_event(jsonb) TO service_role;

CREATE OR REPLACE FUNCTION public.retry_stripe_event(event_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_event_id constant text := btrim(retry_stripe_event.event_id);
    v_customer_id text;
    v_row public.stripe_events;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_text('retry_stripe_event', 'event_id', retry_stripe_event.event_id, 255);

    -- An event id is required, and the event must have been received.
    IF v_event_id IS NULL OR v_event_id = '' THEN
        RAISE EXCEPTION 'retry_stripe_event: event_id is required (event_id=%)',
            coalesce(quote_literal(retry_stripe_event.event_id), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT e.customer_id INTO v_customer_id FROM public.stripe_events AS e WHERE e.stripe_event_id = v_event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'retry_stripe_event: unknown event (event_id=%)', v_event_id
            USING ERRCODE = 'BD030', HINT = 'billingdb events list shows the events received.';
    END IF;

    -- The same lock order as process_stripe_event: customer, then the event row.
    IF v_customer_id IS NOT NULL THEN
        PERFORM billingdb._lock_stripe_customer(v_customer_id);
    END IF;
    SELECT e.* INTO STRICT v_row FROM public.stripe_events AS e WHERE e.stripe_event_id = v_event_id FOR UPDATE;

    -- Done already: nothing to retry.
    IF v_row.processed THEN
        RETURN jsonb_build_object(
            'event_id', v_event_id,
            'status', 'duplicate',
            'detail', jsonb_build_object(
                'first_status', v_row.status, 'processed_at', v_row.processed_at, 'retry_count', v_row.retry_count
            )
        );
    END IF;

    -- Failed, pending, or marked unprocessed by hand: process the stored payload again.
    RETURN billingdb._attempt_stripe_event(v_row.id);
END
$function$;

COMMENT ON FUNCTION public.retry_stripe_event(text) IS
'Contract: processes a stored event again from its payload, as process_stripe_event would, when it is not done '
'(status failed or pending, or processed set to false by hand as in the runbook). Returns jsonb {event_id, status, '
'detail} with process_stripe_event''s statuses; duplicate (nothing changes) when the event is already processed, '
'ignored or stale. A failure increments retry_count and records error. Errors: 22023 for a null or blank event_id; '
'BD030 when no event with that id was received.';

REVOKE ALL ON FUNCTION public.retry_stripe_event(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.retry_stripe_event(text) TO service_role;

CREATE OR REPLACE FUNCTION billingdb._apply_pending_stripe_events(customer_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_customer_id constant text := _apply_pending_stripe_events.customer_id;
    v_done bigint[] := '{}'::bigint[];
    v_id bigint;
    v_results jsonb := '[]'::jsonb;
BEGIN
    -- Serialise with event processing for this customer (see _lock_stripe_customer).
    PERFORM billingdb._lock_stripe_customer(v_customer_id);

    -- Oldest first (event created, then event id); each event once, even if
    -- it stays pending, so the loop ends.
    LOOP
        SELECT e.id INTO v_id
        FROM public.stripe_events AS e
        WHERE
            e.customer_id = v_customer_id
            AND e.status = 'pending'
            AND NOT (e.id = ANY(v_done))
        ORDER BY e.event_created, e.stripe_event_id
        LIMIT 1
        FOR UPDATE;
        EXIT WHEN NOT FOUND;
        v_done := v_done || v_id;
        v_results := v_results || jsonb_build_array(billingdb._attempt_stripe_event(v_id));
    END LOOP;

    RETURN v_results;
END
$function$;

COMMENT ON FUNCTION billingdb._apply_pending_stripe_events(text) IS
'Internal. Contract: processes the pending events of customer_id (stripe_events.status = pending) one at a time in '
'order of the event''s created time, then its id, each through _attempt_stripe_event (its own sub-transaction: a '
'failure is recorded on that event and does not stop the others), under the customer''s lock. Returns a jsonb array '
'of their {event_id, status, detail}. Called by the trigger on stripe_customers when a customer is linked.';

REVOKE ALL ON FUNCTION billingdb._apply_pending_stripe_events(text) FROM public, anon, authenticated;

-- _stripe_customers_apply_pending: trigger function of stripe_customers.
CREATE OR REPLACE FUNCTION billingdb._stripe_customers_apply_pending()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    -- A new link only: an insert with a customer, or an update that changes it.
    IF new.stripe_customer_id IS NULL
        OR (tg_op = 'UPDATE' AND old.stripe_customer_id IS NOT DISTINCT FROM new.stripe_customer_id) THEN
        RETURN NULL;
    END IF;

    -- The customer's pending events apply now, in this transaction.
    PERFORM billingdb._apply_pending_stripe_events(new.stripe_customer_id);
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION billingdb._stripe_customers_apply_pending() IS
'Internal. Contract: AFTER INSERT OR UPDATE OF stripe_customer_id trigger on stripe_customers: when a user is newly '
'linked to a Stripe customer (by link_stripe_customer or otherwise), that customer''s pending Stripe events are '
'applied in order in the same transaction (_apply_pending_stripe_events). Never raises for an event''s failure: that '
'event records it.';

REVOKE ALL ON FUNCTION billingdb._stripe_customers_apply_pending() FROM public, anon, authenticated;

-- When a user is linked to a Stripe customer, that customer's pending events apply.
CREATE TRIGGER stripe_customers_apply_pending_events
AFTER INSERT OR UPDATE OF stripe_customer_id ON billingdb.stripe_customers
FOR EACH ROW
WHEN (new.stripe_customer_id IS NOT null)
EXECUTE FUNCTION billingdb._stripe_customers_apply_pending();

-- purge_stripe_events_batch: one short batch of the seed's monthly archive.
--
-- One batch per call, not a procedure that loops and COMMITs: PostgreSQL allows
-- COMMIT only in a routine that is neither SECURITY DEFINER nor has a SET
-- clause, and every billingdb routine is both. The callers loop instead, one
-- transaction per batch: pg_cron by its schedule, `billingdb maintenance run`
-- until a short batch. No lock or snapshot outlives one batch.
CREATE OR REPLACE FUNCTION public.purge_stripe_events_batch(
    older_than interval DEFAULT null,
    batch_size integer DEFAULT 1000
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_older_than constant interval := coalesce(
        purge_stripe_events_batch.older_than,
        make_interval(days => coalesce(billingdb._billing_setting('stripe_events_retention_days'), '90')::integer)
    );
    v_batch_size constant integer := purge_stripe_events_batch.batch_size;
    v_deleted integer;
BEGIN
    -- Events are the idempotency record: Stripe redelivers and lets an operator
    -- resend an event for up to 30 days, so a younger record must stay.
    IF v_older_than < interval '30 days' THEN
        RAISE EXCEPTION 'purge_stripe_events_batch: older_than must be at least 30 days (older_than=%)', v_older_than
            USING ERRCODE = '22023',
            HINT = 'Stripe can deliver an event again within 30 days; a purged event would be applied again.';
    END IF;
    IF v_batch_size IS NULL OR v_batch_size NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'purge_stripe_events_batch: batch_size must be between 1 and 100000 (batch_size=%)',
            coalesce(v_batch_size::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;

    -- One batch of done events (processed, ignored, stale) older than the
    -- cut-off, oldest first; rows another transaction holds are skipped, not
    -- waited for, so this never queues behind webhook processing.
    DELETE FROM public.stripe_events AS e
    WHERE e.id IN (
        SELECT s.id
        FROM public.stripe_events AS s
        WHERE
            s.status IN ('processed', 'ignored', 'stale')
            AND s.processed
            AND s.created_at < now() - v_older_than
        ORDER BY s.created_at, s.id
        LIMIT v_batch_size
        FOR UPDATE SKIP LOCKED
    );
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION public.purge_stripe_events_batch(interval, integer) IS
'Contract: deletes at most batch_size (default 1000, 1..100000) stripe_events that are done (processed = true: '
'status processed, ignored or stale) and were received more than older_than ago (default: setting '
'stripe_events_retention_days, 90), oldest first, skipping rows locked by others; returns how many. Failed, pending '
'and unprocessed events are never deleted. Deleted, not copied: dump them first if they must be kept. To purge a '
'backlog, call it in a loop, one transaction per call, until it returns less than batch_size (billingdb maintenance '
'run does); pg_cron job stripe_events_purge runs one batch every 5 minutes. '
'Errors: 22023 when older_than is under 30 days (Stripe may still resend such events) or batch_size is out of range.';

REVOKE ALL ON FUNCTION public.purge_stripe_events_batch(interval, integer) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.purge_stripe_events_batch(interval, integer) TO service_role;

-- Batches: many events in one transaction, for the backfills (billingdb stripe
-- sync-events, billingdb events replay); the Events API cursor and the last run.

CREATE TABLE billingdb.stripe_event_sync (
    singleton boolean PRIMARY KEY DEFAULT true,
    cursor_created timestamptz,
    cursor_event_id text,
    last_started_at timestamptz,
    last_finished_at timestamptz,
    last_succeeded_at timestamptz,
    last_error text,
    last_counts jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT stripe_event_sync_one_row CHECK (singleton),
    CONSTRAINT stripe_event_sync_cursor CHECK ((cursor_created IS null) = (cursor_event_id IS null))
);

COMMENT ON TABLE billingdb.stripe_event_sync IS
'One row: the newest Stripe event synced from the Events API (cursor_created, cursor_event_id; a sync starts from '
'cursor_created, the events of that second again being duplicates) and the last sync run (started, finished, '
'succeeded, error, counts by outcome). Written by process_stripe_events and the stripe_event_sync functions only.';

REVOKE ALL ON TABLE billingdb.stripe_event_sync FROM public, anon, authenticated, service_role;

CREATE OR REPLACE FUNCTION public.process_stripe_events(events jsonb, advance_cursor boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_events constant jsonb := process_stripe_events.events;
    v_event jsonb;
    v_result jsonb;
    v_results jsonb[] := '{}';
    v_created bigint;
    v_newest_created bigint;
    v_newest_id text;
BEGIN
    IF v_events IS NULL OR jsonb_typeof(v_events) <> 'array' THEN
        RAISE EXCEPTION 'process_stripe_events: events must be a JSON array of Stripe events (events=%)',
            coalesce(left(v_events::text, 80), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF jsonb_array_length(v_events) > 1000 THEN
        RAISE EXCEPTION 'process_stripe_events: at most 1000 events per batch (got %)', jsonb_array_length(v_events)
            USING ERRCODE = '22023', HINT = 'Split the events into several batches.';
    END IF;
    IF advance_cursor IS NULL THEN
        RAISE EXCEPTION 'process_stripe_events: advance_cursor must be true or false'
            USING ERRCODE = '22023';
    END IF;

    -- In order, each as process_stripe_event would: a failed event rolls back
    -- only its own effects (failed), a malformed one changes nothing (invalid).
    FOR v_event IN SELECT e.value FROM jsonb_array_elements(v_events) AS e (value) LOOP
        BEGIN
            v_result := public.process_stripe_event(v_event);
            v_created := (v_event ->> 'created')::bigint;
            -- The cursor follows the Events API, which lists no event from the
            -- future: one dated ahead of this server's clock (beyond a skew of
            -- 5 minutes) is processed but does not move it.
            IF
                v_created <= extract(EPOCH FROM now()) + 300
                AND (
                    v_newest_created IS NULL OR v_created > v_newest_created
                    OR (v_created = v_newest_created AND v_event ->> 'id' > v_newest_id)
                )
            THEN
                v_newest_created := v_created;
                v_newest_id := v_event ->> 'id';
            END IF;
        EXCEPTION WHEN data_exception THEN
            v_result := jsonb_build_object(
                'event_id', CASE WHEN jsonb_typeof(v_event) = 'object' THEN left(v_event ->> 'id', 255) END,
                'status', 'invalid',
                'detail', jsonb_build_object('sqlstate', SQLSTATE, 'error', SQLERRM)
            );
        END;
        v_results := v_results || v_result;
    END LOOP;

    -- The cursor moves forward only, in the transaction that applied the events.
    IF advance_cursor AND v_newest_created IS NOT NULL THEN
        INSERT INTO billingdb.stripe_event_sync AS s (cursor_created, cursor_event_id)
        VALUES (to_timestamp(v_newest_created), v_newest_id)
        ON CONFLICT (singleton) DO UPDATE
            SET cursor_created = excluded.cursor_created, cursor_event_id = excluded.cursor_event_id
            WHERE
                s.cursor_created IS NULL
                OR (excluded.cursor_created, excluded.cursor_event_id) > (s.cursor_created, s.cursor_event_id);
    END IF;

    RETURN to_jsonb(v_results);
END
$function$;

COMMENT ON FUNCTION public.process_stripe_events(jsonb, boolean) IS
'Contract: processes a batch of Stripe events (a JSON array, at most 1000) in order in one transaction, each exactly '
'as process_stripe_event does (duplicates change nothing, a failed event rolls back only its own effects), and '
'returns the JSON array of their results {event_id, status, detail}. An element process_stripe_event refuses as '
'malformed (22023) is status invalid with detail {sqlstate, error} and changes nothing. With advance_cursor, the '
'Events API cursor (billingdb.stripe_event_sync) moves to the newest event of the batch (created, then id) not '
'dated more than 5 minutes ahead of now(), never backwards, in the same transaction. One commit for many events: '
'the path of billingdb stripe sync-events and billingdb events replay. Errors: 22023 when events is not an array or holds more than 1000 elements, or '
'advance_cursor is null.';

REVOKE ALL ON FUNCTION public.process_stripe_events(jsonb, boolean) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.process_stripe_events(jsonb, boolean) TO service_role;

-- _stripe_event_sync_running_here: whether this session holds the sync's lock
-- (pg_locks shows a bigint advisory key as classid = high half, objid = low half).
CREATE OR REPLACE FUNCTION billingdb._stripe_event_sync_running_here()
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY INVOKER
AS $function$
    SELECT EXISTS (
        SELECT
        FROM pg_catalog.pg_locks AS l
        WHERE
            l.locktype = 'advisory'
            AND l.pid = pg_catalog.pg_backend_pid()
            AND l.granted
            AND l.objsubid = 1
            AND l.classid = ((pg_catalog.hashtextextended('billingdb.stripe_event_sync', 0) >> 32) & 4294967295)::oid
            AND l.objid = (pg_catalog.hashtextextended('billingdb.stripe_event_sync', 0) & 4294967295)::oid
    )
$function$;

COMMENT ON FUNCTION billingdb._stripe_event_sync_running_here() IS
'Internal (reads only pg_locks, so neither SECURITY DEFINER nor SET search_path). Contract: true when this session '
'holds the Events API sync''s session advisory lock (begin_stripe_event_sync), else false.';

REVOKE ALL ON FUNCTION billingdb._stripe_event_sync_running_here() FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION public.begin_stripe_event_sync()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_row billingdb.stripe_event_sync;
BEGIN
    -- One sync at a time: a session lock, released by finish_stripe_event_sync or
    -- when the session ends (a crash leaves nothing locked). Session advisory
    -- locks nest, so this session's own sync is looked for first: a second
    -- begin would leave the lock held after one finish.
    IF billingdb._stripe_event_sync_running_here() THEN
        RETURN jsonb_build_object('started', false, 'reason', 'a sync is already running in this session');
    END IF;
    IF NOT pg_try_advisory_lock(hashtextextended('billingdb.stripe_event_sync', 0)) THEN
        RETURN jsonb_build_object('started', false, 'reason', 'another sync is running');
    END IF;
    SELECT s.* INTO v_row FROM billingdb.stripe_event_sync AS s;
    RETURN jsonb_build_object(
        'started', true,
        'cursor_created', v_row.cursor_created,
        'cursor_event_id', v_row.cursor_event_id,
        'last_started_at', v_row.last_started_at,
        'last_succeeded_at', v_row.last_succeeded_at
    );
END
$function$;

COMMENT ON FUNCTION public.begin_stripe_event_sync() IS
'Contract: starts an Events API sync in this session by taking the sync''s session advisory lock without waiting; '
'writes nothing. Returns {started: true, cursor_created, cursor_event_id, last_started_at, last_succeeded_at} (null '
'before the first '
'sync), or {started: false, reason} when another session is syncing or this one already is. Call '
'finish_stripe_event_sync when done; a '
'session that ends releases the lock.';

REVOKE ALL ON FUNCTION public.begin_stripe_event_sync() FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.begin_stripe_event_sync() TO service_role;

CREATE OR REPLACE FUNCTION public.finish_stripe_event_sync(
    started_at timestamptz, counts jsonb, error text DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_error constant text := nullif(btrim(finish_stripe_event_sync.error), '');
    v_row billingdb.stripe_event_sync;
BEGIN
    PERFORM billingdb._check_text('finish_stripe_event_sync', 'error', v_error, 1000);
    PERFORM billingdb._check_metadata('finish_stripe_event_sync', 'counts', finish_stripe_event_sync.counts);
    IF
        finish_stripe_event_sync.counts IS NOT null AND (
            finish_stripe_event_sync.started_at IS null OR NOT isfinite(finish_stripe_event_sync.started_at)
            OR finish_stripe_event_sync.started_at > clock_timestamp()
        )
    THEN
        RAISE EXCEPTION 'finish_stripe_event_sync: started_at must be a finite time in the past (started_at=%)',
            coalesce(finish_stripe_event_sync.started_at::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    -- Only the session that began the sync ends it (and records its run).
    IF NOT billingdb._stripe_event_sync_running_here() THEN
        RAISE EXCEPTION 'finish_stripe_event_sync: no sync is running in this session'
            USING ERRCODE = 'BD031', HINT = 'Call begin_stripe_event_sync first, in the same session.';
    END IF;
    -- Without counts (a dry run) nothing is recorded: the lock is released.
    IF finish_stripe_event_sync.counts IS NOT null THEN
        INSERT INTO billingdb.stripe_event_sync AS s (
            last_started_at, last_finished_at, last_succeeded_at, last_error, last_counts
        )
        VALUES (
            finish_stripe_event_sync.started_at, clock_timestamp(),
            CASE WHEN v_error IS null THEN clock_timestamp() END, v_error, finish_stripe_event_sync.counts
        )
        ON CONFLICT (singleton) DO UPDATE
            SET
                last_started_at = excluded.last_started_at,
                last_finished_at = excluded.last_finished_at,
                last_succeeded_at = coalesce(excluded.last_succeeded_at, s.last_succeeded_at),
                last_error = excluded.last_error,
                last_counts = excluded.last_counts;
    END IF;
    PERFORM pg_advisory_unlock(hashtextextended('billingdb.stripe_event_sync', 0));
    SELECT s.* INTO v_row FROM billingdb.stripe_event_sync AS s;
    RETURN coalesce(to_jsonb(v_row) - 'singleton', '{}'::jsonb);
END
$function$;

COMMENT ON FUNCTION public.finish_stripe_event_sync(timestamptz, jsonb, text) IS
'Contract: ends this session''s Events API sync: records the run (started_at, now as finished, counts by outcome, '
'error; a run without error sets last_succeeded_at) and releases the sync''s lock. With counts null (a dry run) it '
'only releases the lock. Returns the sync row {cursor_created, cursor_event_id, last_started_at, last_finished_at, '
'last_succeeded_at, last_error, last_counts}, {} before any. Errors: 22023 when counts is not a JSON object, error is '
'longer than 1000 characters, or started_at is null, infinite or in the future (with counts); BD031 when this '
'session did not begin a sync (nothing is recorded).';

REVOKE ALL ON FUNCTION public.finish_stripe_event_sync(timestamptz, jsonb, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.finish_stripe_event_sync(timestamptz, jsonb, text) TO service_role;
