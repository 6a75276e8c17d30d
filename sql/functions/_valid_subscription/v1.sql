-- _valid_subscription v1 (revision 0008): subscriptions' row rules, the table's one CHECK (see
-- _valid_credit_transaction for why a function). IMMUTABLE, no table access: neither SECURITY DEFINER
-- nor SET search_path.
CREATE OR REPLACE FUNCTION public._valid_subscription(
    subscription_id text,
    user_id text,
    stripe_customer_id text,
    status text,
    current_period_start timestamptz,
    current_period_end timestamptz
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
        subscription_id ~ '^sub_'
        AND pg_catalog.btrim(user_id) <> ''
        AND stripe_customer_id ~ '^cus_'
        -- Stripe's eight subscription statuses.
        AND status IN (
            'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'unpaid', 'canceled', 'paused'
        )
        AND current_period_end >= current_period_start;
END
$function$;

COMMENT ON FUNCTION public._valid_subscription(text, text, text, text, timestamptz, timestamptz) IS
'Internal, the CHECK of subscriptions (constraint subscriptions_valid). Contract: false when a row breaks a rule, '
'else true (null when an input it needs is null, which a CHECK passes). Rules: subscription_id starts with sub_; '
'user_id is not blank; stripe_customer_id starts with cus_; status is one of Stripe''s incomplete, '
'incomplete_expired, trialing, active, past_due, unpaid, canceled, paused; the period does not end before it '
'starts. IMMUTABLE: changing the rules needs a new version and a revision that validates the stored rows again.';

REVOKE ALL ON FUNCTION public._valid_subscription(text, text, text, text, timestamptz, timestamptz)
FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._valid_subscription(text, text, text, text, timestamptz, timestamptz)
TO service_role;
