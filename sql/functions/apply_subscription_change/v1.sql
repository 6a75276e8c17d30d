-- apply_subscription_change v1 (revision 0002): the one writer of public.subscriptions.
CREATE OR REPLACE FUNCTION public.apply_subscription_change(
    subscription_id text,
    user_id text,
    customer_id text,
    status text,
    price_id text,
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean,
    canceled_at timestamptz,
    event_created timestamptz DEFAULT null,
    event_id text DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_subscription_id constant text := apply_subscription_change.subscription_id;
    v_user_id text := nullif(btrim(apply_subscription_change.user_id), '');
    v_customer_id constant text := nullif(btrim(apply_subscription_change.customer_id), '');
    v_status constant text := apply_subscription_change.status;
    v_price_id constant text := nullif(btrim(apply_subscription_change.price_id), '');
    v_period_start constant timestamptz := apply_subscription_change.current_period_start;
    v_period_end constant timestamptz := apply_subscription_change.current_period_end;
    v_cancel constant boolean := coalesce(apply_subscription_change.cancel_at_period_end, false);
    v_canceled_at constant timestamptz := apply_subscription_change.canceled_at;
    v_event_created constant timestamptz := apply_subscription_change.event_created;
    v_event_id constant text := nullif(btrim(apply_subscription_change.event_id), '');
    v_owner text;
    v_old public.subscriptions;
    v_result text;
BEGIN
    -- Arguments: a subscription id, one of Stripe's 8 statuses, a sane period,
    -- a user or a customer, an event id only with its time.
    IF v_subscription_id IS NULL OR v_subscription_id !~ '^sub_' THEN
        RAISE EXCEPTION 'apply_subscription_change: malformed subscription id (subscription_id=%)',
            coalesce(quote_literal(v_subscription_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe subscription ids start with sub_.';
    END IF;
    IF v_status IS NULL OR v_status NOT IN (
        'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'unpaid', 'canceled', 'paused'
    ) THEN
        RAISE EXCEPTION 'apply_subscription_change: unknown status (subscription_id=%, status=%)',
            v_subscription_id, coalesce(quote_literal(v_status), 'NULL')
            USING ERRCODE = '22023',
                HINT = 'One of incomplete, incomplete_expired, trialing, active, past_due, unpaid, canceled, paused.';
    END IF;
    IF v_customer_id IS NOT NULL AND v_customer_id !~ '^cus_' THEN
        RAISE EXCEPTION 'apply_subscription_change: malformed customer id (subscription_id=%, customer_id=%)',
            v_subscription_id, quote_literal(v_customer_id)
            USING ERRCODE = '22023', HINT = 'Stripe customer ids start with cus_.';
    END IF;
    IF v_period_end < v_period_start THEN
        RAISE EXCEPTION 'apply_subscription_change: period ends before it starts '
            '(subscription_id=%, current_period_start=%, current_period_end=%)',
            v_subscription_id, v_period_start, v_period_end
            USING ERRCODE = '22023';
    END IF;
    IF v_user_id IS NULL AND v_customer_id IS NULL THEN
        RAISE EXCEPTION 'apply_subscription_change: user_id or customer_id is required (subscription_id=%)',
            v_subscription_id
            USING ERRCODE = '22023';
    END IF;
    IF v_event_id IS NOT NULL AND v_event_created IS NULL THEN
        RAISE EXCEPTION 'apply_subscription_change: event_id without event_created (subscription_id=%, event_id=%)',
            v_subscription_id, v_event_id
            USING ERRCODE = '22023', HINT = 'Pass the event''s created time with its id.';
    END IF;

    -- The user: the one given, else the one the customer is linked to; both
    -- given must agree with the customer mapping.
    IF v_customer_id IS NOT NULL THEN
        SELECT c.user_id INTO v_owner FROM public.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id;
        IF v_user_id IS NULL AND v_owner IS NULL THEN
            RAISE EXCEPTION 'apply_subscription_change: unknown customer (subscription_id=%, customer_id=%)',
                v_subscription_id, v_customer_id
                USING ERRCODE = 'BD001',
                    HINT = 'Link the customer first (link_stripe_customer) or pass user_id; then retry.';
        END IF;
        IF v_user_id IS NOT NULL AND v_owner IS NOT NULL AND v_owner <> v_user_id THEN
            RAISE EXCEPTION 'apply_subscription_change: customer linked to another user '
                '(subscription_id=%, customer_id=%, user_id=%, linked_user_id=%)',
                v_subscription_id, v_customer_id, v_user_id, v_owner
                USING ERRCODE = 'BD004';
        END IF;
        v_user_id := coalesce(v_user_id, v_owner);
    END IF;

    -- Serialise with every other write of this user, then lock the row.
    PERFORM public._lock_user(v_user_id);
    SELECT s.* INTO v_old FROM public.subscriptions AS s WHERE s.subscription_id = v_subscription_id FOR UPDATE;

    -- New subscription: any status (its earlier events may still be on the way).
    IF NOT FOUND THEN
        INSERT INTO public.subscriptions AS s (
            subscription_id, user_id, stripe_customer_id, status, price_id,
            current_period_start, current_period_end, cancel_at_period_end, canceled_at,
            last_event_created, last_event_id
        )
        VALUES (
            v_subscription_id, v_user_id, v_customer_id, v_status, v_price_id,
            v_period_start, v_period_end, v_cancel, v_canceled_at,
            v_event_created, v_event_id
        )
        ON CONFLICT ON CONSTRAINT subscriptions_pkey DO NOTHING;
        IF FOUND THEN
            INSERT INTO public.activity_log (user_id, activity_type, details)
            VALUES (
                v_user_id, 'subscription_created',
                jsonb_build_object(
                    'subscription_id', v_subscription_id, 'status', v_status, 'price_id', v_price_id,
                    'event_id', v_event_id, 'event_created', v_event_created
                )
            );
            PERFORM public._store_subscription_cache(v_user_id, public._compute_subscription_state(v_user_id));
            RETURN jsonb_build_object(
                'applied', true, 'result', 'created', 'from_status', NULL, 'to_status', v_status,
                'subscription_id', v_subscription_id, 'user_id', v_user_id
            );
        END IF;
        -- Created meanwhile under another user (we hold only our user's lock).
        SELECT s.* INTO STRICT v_old
        FROM public.subscriptions AS s
        WHERE s.subscription_id = v_subscription_id
        FOR UPDATE;
    END IF;

    -- A subscription belongs to one user and one customer.
    IF v_old.user_id <> v_user_id
        OR (v_customer_id IS NOT NULL AND v_old.stripe_customer_id <> v_customer_id) THEN
        RAISE EXCEPTION 'apply_subscription_change: subscription belongs to another user or customer '
            '(subscription_id=%, user_id=%, customer_id=%, stored_user_id=%, stored_customer_id=%)',
            v_subscription_id, v_user_id, v_customer_id, v_old.user_id, v_old.stripe_customer_id
            USING ERRCODE = 'BD013';
    END IF;

    -- Ordering by the watermark (events only; a call without event_created is
    -- authoritative). Older: stale. Same second: only a status change can be
    -- progress; the same event again or the same status is stale, and a
    -- status change goes to the state machine below (forward progress wins).
    IF v_event_created IS NOT NULL AND v_old.last_event_created IS NOT NULL THEN
        IF v_event_created < v_old.last_event_created
            OR (
                v_event_created = v_old.last_event_created
                AND (v_event_id IS NOT DISTINCT FROM v_old.last_event_id OR v_status = v_old.status)
            ) THEN
            RETURN jsonb_build_object(
                'applied', false, 'result', 'stale', 'from_status', v_old.status, 'to_status', v_status,
                'subscription_id', v_subscription_id, 'user_id', v_user_id
            );
        END IF;
    END IF;

    -- The state machine: a change of status must be an allowed transition; a
    -- refused one changes nothing and is logged.
    IF v_status <> v_old.status AND NOT EXISTS (
        SELECT FROM public.subscription_status_transitions AS tr
        WHERE tr.from_status = v_old.status AND tr.to_status = v_status
    ) THEN
        INSERT INTO public.activity_log (user_id, activity_type, details)
        VALUES (
            v_user_id, 'subscription_transition_refused',
            jsonb_build_object(
                'subscription_id', v_subscription_id, 'from_status', v_old.status, 'to_status', v_status,
                'event_id', v_event_id, 'event_created', v_event_created
            )
        );
        RETURN jsonb_build_object(
            'applied', false, 'result', 'refused_transition', 'from_status', v_old.status, 'to_status', v_status,
            'subscription_id', v_subscription_id, 'user_id', v_user_id
        );
    END IF;

    -- Nothing differs: only the watermark moves.
    IF (
        v_old.stripe_customer_id, v_old.status, v_old.price_id, v_old.current_period_start,
        v_old.current_period_end, v_old.cancel_at_period_end, v_old.canceled_at
    ) IS NOT DISTINCT FROM (
        coalesce(v_customer_id, v_old.stripe_customer_id), v_status, v_price_id, v_period_start,
        v_period_end, v_cancel, v_canceled_at
    ) THEN
        v_result := 'unchanged';
        IF v_event_created IS NOT NULL THEN
            UPDATE public.subscriptions AS s
            SET last_event_created = v_event_created, last_event_id = v_event_id
            WHERE s.subscription_id = v_subscription_id;
        END IF;
    ELSE
        -- Apply the change and move the watermark (kept by an authoritative call).
        v_result := 'updated';
        UPDATE public.subscriptions AS s
        SET
            stripe_customer_id = coalesce(v_customer_id, s.stripe_customer_id),
            status = v_status,
            price_id = v_price_id,
            current_period_start = v_period_start,
            current_period_end = v_period_end,
            cancel_at_period_end = v_cancel,
            canceled_at = v_canceled_at,
            last_event_created = coalesce(v_event_created, s.last_event_created),
            last_event_id = CASE WHEN v_event_created IS NULL THEN s.last_event_id ELSE v_event_id END,
            updated_at = now()
        WHERE s.subscription_id = v_subscription_id;
        IF v_status <> v_old.status THEN
            INSERT INTO public.activity_log (user_id, activity_type, details)
            VALUES (
                v_user_id, 'subscription_status_changed',
                jsonb_build_object(
                    'subscription_id', v_subscription_id, 'from_status', v_old.status, 'to_status', v_status,
                    'event_id', v_event_id, 'event_created', v_event_created
                )
            );
        END IF;
        PERFORM public._store_subscription_cache(v_user_id, public._compute_subscription_state(v_user_id));
    END IF;

    RETURN jsonb_build_object(
        'applied', v_result = 'updated', 'result', v_result, 'from_status', v_old.status, 'to_status', v_status,
        'subscription_id', v_subscription_id, 'user_id', v_user_id
    );
END
$function$;

COMMENT ON FUNCTION public.apply_subscription_change(
    text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, text
) IS
'Contract: the one entry point that writes public.subscriptions. Applies a Stripe subscription''s state (status, '
'price_id, period, cancel_at_period_end, canceled_at) to subscription_id for user_id (or, when null, the user linked '
'to customer_id). Returns jsonb {applied, result, from_status, to_status, subscription_id, user_id}; result: created '
'(new row, any status), updated (applied), unchanged (nothing differs; an event still moves the watermark), '
'refused_transition (the status change is not in subscription_status_transitions: nothing changes, logged as '
'subscription_transition_refused in activity_log), stale (nothing changes). applied is true for created and updated. '
'Ordering: the watermark is the last applied event (last_event_created, last_event_id). An event strictly newer than '
'it (or the first one) is applied when the state machine allows it. An older one is stale. Same second (tie): the '
'same event id again, or the same status, is stale; a status change is applied only if the transition is allowed '
'(forward progress wins), else refused_transition. event_created null: an authoritative manual call, applied if '
'the transition is allowed, the watermark kept. Same-status updates are always allowed. Applied changes log '
'subscription_created / subscription_status_changed and refresh the user''s cache row. Errors: 22023 for a '
'malformed subscription (sub_) or customer (cus_) id, an unknown status, current_period_end < current_period_start, '
'neither user_id nor customer_id, or event_id without event_created; BD001 when user_id is null and no user is '
'linked to customer_id; BD004 when customer_id is linked to another user; BD013 when the subscription belongs to '
'another user or customer.';

REVOKE ALL ON FUNCTION public.apply_subscription_change(
    text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, text
) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.apply_subscription_change(
    text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, text
) TO service_role;
