-- Revision 0008 down: one CHECK constraint per rule again, with the names and
-- expressions of revisions 0002, 0003 and 0005; then the _valid_* functions go.
ALTER TABLE public.credit_transactions
DROP CONSTRAINT credit_transactions_valid,
ADD CONSTRAINT credit_transactions_amount_check CHECK (amount <> 0),
ADD CONSTRAINT credit_transactions_balance_after_check CHECK (balance_after >= 0),
ADD CONSTRAINT credit_transactions_check CHECK (transaction_type NOT IN ('allocation', 'refund') OR amount > 0),
ADD CONSTRAINT credit_transactions_check1 CHECK (transaction_type NOT IN ('usage', 'expiration') OR amount < 0),
ADD CONSTRAINT credit_transactions_check2 CHECK ((transaction_type = 'refund') = (refund_of IS NOT null)),
ADD CONSTRAINT credit_transactions_hold_release_sign CHECK (
    (transaction_type <> 'hold' OR amount < 0) AND (transaction_type <> 'release' OR amount > 0)
),
ADD CONSTRAINT credit_transactions_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
ADD CONSTRAINT credit_transactions_transaction_type_check CHECK (
    transaction_type IN ('allocation', 'usage', 'refund', 'adjustment', 'expiration', 'hold', 'release')
),
ADD CONSTRAINT credit_transactions_user_id_check CHECK (btrim(user_id) <> '');

ALTER TABLE public.credit_holds
DROP CONSTRAINT credit_holds_valid,
ADD CONSTRAINT credit_holds_amount_check CHECK (amount > 0),
ADD CONSTRAINT credit_holds_expiry CHECK (expires_at > created_at),
ADD CONSTRAINT credit_holds_idempotency_key_check CHECK (btrim(idempotency_key) <> ''),
ADD CONSTRAINT credit_holds_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
ADD CONSTRAINT credit_holds_released CHECK ((status = 'held') = (release_transaction_id IS null)),
ADD CONSTRAINT credit_holds_result CHECK (status = 'committed' OR result IS null),
ADD CONSTRAINT credit_holds_settled CHECK ((status = 'held') = (settled_at IS null)),
ADD CONSTRAINT credit_holds_status_check CHECK (status IN ('held', 'committed', 'released', 'expired')),
ADD CONSTRAINT credit_holds_used CHECK ((status = 'committed') = (usage_transaction_id IS NOT null)),
ADD CONSTRAINT credit_holds_user_id_check CHECK (btrim(user_id) <> '');

ALTER TABLE public.stripe_events
DROP CONSTRAINT stripe_events_valid,
ADD CONSTRAINT stripe_events_retry_count_check CHECK (retry_count >= 0),
ADD CONSTRAINT stripe_events_status_check CHECK (
    status IN ('received', 'processed', 'ignored', 'stale', 'pending', 'failed')
),
ADD CONSTRAINT stripe_events_stripe_event_id_check CHECK (stripe_event_id <> '');

ALTER TABLE public.subscriptions
DROP CONSTRAINT subscriptions_valid,
ADD CONSTRAINT subscriptions_check CHECK (current_period_end >= current_period_start),
ADD CONSTRAINT subscriptions_status_check CHECK (
    status IN ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'unpaid', 'canceled', 'paused')
),
ADD CONSTRAINT subscriptions_stripe_customer_id_check CHECK (stripe_customer_id ~ '^cus_'),
ADD CONSTRAINT subscriptions_subscription_id_check CHECK (subscription_id ~ '^sub_'),
ADD CONSTRAINT subscriptions_user_id_check CHECK (btrim(user_id) <> '');

DROP FUNCTION public._valid_credit_transaction(text, integer, integer, bigint, jsonb, text);
DROP FUNCTION public._valid_credit_hold(
    text, integer, text, text, jsonb, jsonb, timestamptz, timestamptz, timestamptz, bigint, bigint
);
DROP FUNCTION public._valid_stripe_event(text, text, integer);
DROP FUNCTION public._valid_subscription(text, text, text, text, timestamptz, timestamptz);
