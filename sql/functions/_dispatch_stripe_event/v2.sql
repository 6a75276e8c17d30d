-- _dispatch_stripe_event v2 (revision 0006): the sub-transaction moves here from
-- _attempt_stripe_event v1, so that process_stripe_event v2 can dispatch a new event
-- before recording it (one INSERT with the outcome instead of INSERT, lock and UPDATE).
CREATE OR REPLACE FUNCTION public._dispatch_stripe_event(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_event constant jsonb := _dispatch_stripe_event.event;
    v_type constant text := _dispatch_stripe_event.event ->> 'type';
    v_customer_id text;
    v_sqlstate text;
    v_message text;
    v_hint text;
BEGIN
    -- A sub-transaction: on any error the handler's effects roll back and the
    -- error is returned as the outcome (failed) instead of raised.
    BEGIN
        -- Subscription and invoice events belong to a user through the
        -- customer: unknown customer, park the event until the link arrives.
        IF v_type IN (
            'customer.subscription.created', 'customer.subscription.updated', 'customer.subscription.deleted',
            'customer.subscription.paused', 'customer.subscription.resumed',
            'invoice.paid', 'invoice.payment_succeeded', 'invoice.payment_failed'
        ) THEN
            v_customer_id := public._stripe_event_refs(v_event) ->> 'customer_id';
            IF v_customer_id IS NULL THEN
                RAISE EXCEPTION '_dispatch_stripe_event: the event names no customer (event_id=%, type=%)',
                    v_event ->> 'id', v_type
                    USING ERRCODE = '22023';
            END IF;
            IF NOT EXISTS (SELECT FROM public.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id) THEN
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
            ) THEN public._apply_stripe_subscription_event(v_event)
            WHEN v_type IN ('invoice.paid', 'invoice.payment_succeeded') THEN public._apply_stripe_invoice_paid(v_event)
            WHEN v_type = 'invoice.payment_failed' THEN public._apply_stripe_invoice_failed(v_event)
            WHEN v_type = 'checkout.session.completed' THEN public._apply_stripe_checkout_completed(v_event)
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

COMMENT ON FUNCTION public._dispatch_stripe_event(jsonb) IS
'Internal. Contract: applies one validated event by type inside a sub-transaction and returns jsonb {status, '
'detail} (and error when failed): customer.subscription.created|updated|deleted|paused|resumed -> '
'_apply_stripe_subscription_event; invoice.paid, invoice.payment_succeeded -> _apply_stripe_invoice_paid; '
'invoice.payment_failed -> _apply_stripe_invoice_failed; checkout.session.completed -> '
'_apply_stripe_checkout_completed; any other type: ignored {reason, type}. A subscription or invoice event whose '
'customer no user is linked to is pending {reason, customer_id} and changes nothing. Never raises: on any error '
'(those of the handlers; 22023 when such an event names no customer) the effects roll back and the result is status '
'failed, error ''[SQLSTATE] message'', detail {sqlstate, error, hint}.';

REVOKE ALL ON FUNCTION public._dispatch_stripe_event(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._dispatch_stripe_event(jsonb) TO service_role;
