-- _apply_stripe_invoice_paid v1 (revision 0003).
CREATE OR REPLACE FUNCTION public._apply_stripe_invoice_paid(event jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_event constant jsonb := _apply_stripe_invoice_paid.event;
    v_invoice constant jsonb := _apply_stripe_invoice_paid.event #> '{data,object}';
    v_refs constant jsonb := public._stripe_event_refs(_apply_stripe_invoice_paid.event);
    v_invoice_id constant text := public._stripe_id(_apply_stripe_invoice_paid.event #> '{data,object,id}');
    v_reason constant text := _apply_stripe_invoice_paid.event #>> '{data,object,billing_reason}';
    v_price jsonb;
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
    v_price := public._stripe_invoice_credits(v_invoice);

    -- At most once per invoice: invoice.paid and invoice.payment_succeeded both land here.
    v_allocation := public.add_subscription_credits(
        customer_id => v_refs ->> 'customer_id',
        invoice_id => v_invoice_id,
        subscription_id => v_refs ->> 'subscription_id',
        credits => (v_price ->> 'credits')::integer,
        description => format(
            'Subscription credits (%s) for invoice %s', coalesce(v_reason, 'unknown reason'), v_invoice_id
        ),
        metadata => jsonb_build_object(
            'billing_reason', v_reason,
            'price_id', v_price ->> 'price_id',
            'credits_source', v_price ->> 'source',
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
            'allocation', v_allocation
        )
    );
END
$function$;

COMMENT ON FUNCTION public._apply_stripe_invoice_paid(jsonb) IS
'Internal. Contract: invoice.paid and invoice.payment_succeeded: allocates the credits of the invoice''s price '
'(_stripe_invoice_credits) with add_subscription_credits, at most once per invoice whichever event comes first; the '
'ledger entry''s metadata records billing_reason (subscription_create, subscription_cycle, subscription_update, ...), '
'price_id, credits_source and the event. Returns jsonb {status, detail}: processed with detail {action: credits, '
'invoice_id, billing_reason, price_id, credits_source, allocation: add_subscription_credits''s result (duplicate true '
'for the second event of an invoice)}; ignored with detail {reason, invoice_id} for an invoice without a '
'subscription. Errors: BD003 for an unknown price without metadata.credits; those of add_subscription_credits.';

REVOKE ALL ON FUNCTION public._apply_stripe_invoice_paid(jsonb) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._apply_stripe_invoice_paid(jsonb) TO service_role;
