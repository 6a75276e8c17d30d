-- add_subscription_credits v3 (revision 0006): a paid invoice allocates credits, once.
-- v2 added metadata (the webhook records billing_reason, price and event with the entry); v3 sets the
-- new balance in the user's cache row (_store_cached_balance) instead of recomputing the whole state.
CREATE OR REPLACE FUNCTION public.add_subscription_credits(
    customer_id text,
    invoice_id text,
    subscription_id text,
    credits integer,
    description text DEFAULT null,
    metadata jsonb DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_customer_id constant text := add_subscription_credits.customer_id;
    v_invoice_id constant text := add_subscription_credits.invoice_id;
    v_subscription_id constant text := add_subscription_credits.subscription_id;
    v_credits constant integer := add_subscription_credits.credits;
    v_description constant text := coalesce(
        nullif(btrim(add_subscription_credits.description), ''),
        format('Subscription credits for invoice %s', add_subscription_credits.invoice_id)
    );
    v_key constant text := 'invoice:' || add_subscription_credits.invoice_id;
    v_extra constant jsonb := add_subscription_credits.metadata;
    v_user_id text;
    v_prior public.credit_transactions;
    v_sub record;
    v_reset boolean := false;
    v_previous public.credit_transactions;
    v_used integer;
    v_balance integer;
    v_expired integer := 0;
    v_expiration public.credit_transactions;
    v_tx public.credit_transactions;
BEGIN
    -- Arguments: Stripe ids of the customer, invoice and subscription; credits > 0.
    IF v_customer_id IS NULL OR v_customer_id !~ '^cus_' THEN
        RAISE EXCEPTION 'add_subscription_credits: malformed customer id (customer_id=%, invoice_id=%)',
            coalesce(quote_literal(v_customer_id), 'NULL'), coalesce(quote_literal(v_invoice_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe customer ids start with cus_.';
    END IF;
    IF v_invoice_id IS NULL OR v_invoice_id !~ '^in_' THEN
        RAISE EXCEPTION 'add_subscription_credits: malformed invoice id (customer_id=%, invoice_id=%)',
            v_customer_id, coalesce(quote_literal(v_invoice_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe invoice ids start with in_.';
    END IF;
    IF v_subscription_id IS NULL OR v_subscription_id !~ '^sub_' THEN
        RAISE EXCEPTION 'add_subscription_credits: malformed subscription id (invoice_id=%, subscription_id=%)',
            v_invoice_id, coalesce(quote_literal(v_subscription_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe subscription ids start with sub_.';
    END IF;
    IF v_extra IS NOT NULL AND jsonb_typeof(v_extra) <> 'object' THEN
        RAISE EXCEPTION 'add_subscription_credits: metadata must be a JSON object (invoice_id=%, metadata=%)',
            v_invoice_id, left(v_extra::text, 80)
            USING ERRCODE = '22023';
    END IF;
    IF v_credits IS NULL OR v_credits <= 0 THEN
        RAISE EXCEPTION 'add_subscription_credits: credits must be a positive integer (invoice_id=%, credits=%)',
            v_invoice_id, coalesce(v_credits::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;

    -- The user behind the customer.
    SELECT c.user_id INTO v_user_id FROM public.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add_subscription_credits: unknown customer (customer_id=%, invoice_id=%)',
            v_customer_id, v_invoice_id
            USING ERRCODE = 'BD001',
                HINT = 'Link the customer first: link_stripe_customer(user_id, customer_id); then retry.';
    END IF;

    -- Serialise with every other write of this user (a concurrent duplicate
    -- of this invoice waits here, then finds the first allocation).
    PERFORM public._lock_user(v_user_id);

    -- Allocated already: return the first allocation, change nothing.
    SELECT t.* INTO v_prior FROM public.credit_transactions AS t WHERE t.idempotency_key = v_key;
    IF FOUND THEN
        IF v_prior.user_id <> v_user_id OR v_prior.transaction_type <> 'allocation' THEN
            RAISE EXCEPTION 'add_subscription_credits: invoice already used by another user or call '
                '(invoice_id=%, user_id=%, first_transaction_id=%)', v_invoice_id, v_user_id, v_prior.id
                USING ERRCODE = 'BD012';
        END IF;
        SELECT b.balance INTO v_balance FROM public.credit_balances AS b WHERE b.user_id = v_user_id;
        RETURN jsonb_build_object(
            'success', true, 'duplicate', true, 'transaction_id', v_prior.id, 'user_id', v_user_id,
            'credits', v_prior.amount, 'expired', coalesce((v_prior.metadata ->> 'expired')::integer, 0),
            'expiration_transaction_id', (v_prior.metadata ->> 'expiration_transaction_id')::bigint,
            'balance', coalesce(v_balance, 0), 'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id
        );
    END IF;

    -- The subscription, when known, belongs to this user; its plan says whether
    -- credits reset each period. An unknown subscription (its event not yet
    -- applied) allocates without a reset.
    SELECT s.user_id, s.price_id INTO v_sub
    FROM public.subscriptions AS s
    WHERE s.subscription_id = v_subscription_id;
    IF FOUND THEN
        IF v_sub.user_id <> v_user_id THEN
            RAISE EXCEPTION 'add_subscription_credits: subscription belongs to another user '
                '(subscription_id=%, user_id=%, customer_id=%)', v_subscription_id, v_sub.user_id, v_customer_id
                USING ERRCODE = 'BD013';
        END IF;
        SELECT p.reset_each_period INTO v_reset FROM public.plans AS p WHERE p.price_id = v_sub.price_id;
        v_reset := coalesce(v_reset, false);
    END IF;

    -- Reset: the unused credits of the ended period expire first. They are what
    -- the previous allocation of this subscription granted minus the user's net
    -- usage since (usages after it, less the refunds of those usages), never
    -- below 0 and never more than the balance: credits are spent from the
    -- period's allocation first; other credits (grants) stay.
    IF v_reset THEN
        SELECT t.* INTO v_previous
        FROM public.credit_transactions AS t
        WHERE
            t.user_id = v_user_id
            AND t.transaction_type = 'allocation'
            AND t.metadata ->> 'subscription_id' = v_subscription_id
        ORDER BY t.id DESC
        LIMIT 1;
        IF FOUND THEN
            SELECT coalesce(-sum(t.amount), 0) INTO v_used
            FROM public.credit_transactions AS t
            WHERE
                t.user_id = v_user_id
                AND t.id > v_previous.id
                AND (t.transaction_type = 'usage' OR (t.transaction_type = 'refund' AND t.refund_of > v_previous.id));
            SELECT b.balance INTO v_balance FROM public.credit_balances AS b WHERE b.user_id = v_user_id;
            v_expired := least(coalesce(v_balance, 0), greatest(0, v_previous.amount - v_used));
            IF v_expired > 0 THEN
                v_expiration := public._append_credit_transaction(
                    v_user_id, -v_expired, 'expiration',
                    format('Unused credits of the ended period expire (invoice %s)', v_invoice_id),
                    jsonb_build_object(
                        'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id,
                        'customer_id', v_customer_id, 'expired_allocation_id', v_previous.id
                    ),
                    'expiration:' || v_invoice_id, NULL
                );
            END IF;
        END IF;
    END IF;

    -- The allocation; the caller's metadata cannot override billingdb's own keys.
    v_tx := public._append_credit_transaction(
        v_user_id, v_credits, 'allocation', v_description,
        coalesce(v_extra, '{}'::jsonb) || jsonb_build_object(
            'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id, 'customer_id', v_customer_id,
            'expired', v_expired, 'expiration_transaction_id', v_expiration.id
        ),
        v_key, NULL
    );

    -- The activity log, and the new balance in the cache row (an allocation changes no subscription).
    INSERT INTO public.activity_log (user_id, activity_type, details)
    VALUES (
        v_user_id, 'credits_allocated',
        jsonb_build_object(
            'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id, 'customer_id', v_customer_id,
            'credits', v_credits, 'expired', v_expired, 'transaction_id', v_tx.id,
            'expiration_transaction_id', v_expiration.id, 'balance', v_tx.balance_after
        )
    );
    PERFORM public._store_cached_balance(v_user_id, v_tx.balance_after);

    RETURN jsonb_build_object(
        'success', true, 'duplicate', false, 'transaction_id', v_tx.id, 'user_id', v_user_id,
        'credits', v_credits, 'expired', v_expired, 'expiration_transaction_id', v_expiration.id,
        'balance', v_tx.balance_after, 'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id
    );
END
$function$;

COMMENT ON FUNCTION public.add_subscription_credits(text, text, text, integer, text, jsonb) IS
'Contract: allocates credits for a paid invoice to the user linked to customer_id, at most once per invoice '
'(idempotency_key invoice:<invoice_id>; metadata: the caller''s metadata object (v2: e.g. billing_reason, '
'price_id) overlaid with {invoice_id, subscription_id, customer_id, expired, expiration_transaction_id}); creates '
'the balance row if missing, logs credits_allocated in activity_log and '
'sets the new balance in the user''s cache row when there is one (v3; an allocation changes no subscription, so '
'the rest of the cached state stands). Returns jsonb {success, duplicate, transaction_id, user_id, credits, expired, '
'expiration_transaction_id, balance, invoice_id, subscription_id}. A second call for the same invoice changes nothing '
'and returns the first allocation (its transaction_id, credits, expired) with duplicate true and the current '
'balance. Reset: when the subscription is known and its plan (subscriptions.price_id -> plans) has '
'reset_each_period, the unused credits of the ended period first expire as an expiration entry (negative amount, '
'key expiration:<invoice_id>, never a delete): unused = least(balance, greatest(0, A - U)) where A is the amount of '
'this subscription''s previous allocation and U the user''s usages after that allocation less the refunds of those '
'usages (credits are spent from the period''s allocation first; granted credits do not expire); the first '
'allocation of a subscription expires nothing. An unknown subscription allocates without a reset. Errors: 22023 for a '
'malformed customer (cus_), invoice (in_) or subscription (sub_) id, credits null or <= 0, or metadata not an '
'object; BD001 when no user is '
'linked to customer_id; BD013 when the subscription belongs to another user; BD012 when the invoice was allocated '
'to another user.';

REVOKE ALL ON FUNCTION public.add_subscription_credits(text, text, text, integer, text, jsonb)
FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.add_subscription_credits(text, text, text, integer, text, jsonb) TO service_role;
