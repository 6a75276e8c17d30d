-- Revision 0003: Stripe webhook processing in SQL.
--
-- Why: the seed's webhook Edge Function applied events in whatever order they
-- arrived and could apply one twice. Here process_stripe_event() records each
-- event once (stripe_event_id is unique), dispatches it by type inside a
-- sub-transaction (its effects and the processed mark commit together, a
-- failure keeps the record with its error), orders subscription changes by the
-- per-subscription watermark, and parks events of a customer that no user is
-- linked to yet as pending until the link arrives (a trigger on
-- stripe_customers applies them, in order). This file adds the columns that
-- processing records; the functions come from sql/functions/*/v1.sql, and
-- add_subscription_credits moves to v2 (it records the invoice's
-- billing_reason in the ledger entry's metadata).

-- add_subscription_credits v2 adds a parameter: the v1 signature goes first.
DROP FUNCTION public.add_subscription_credits(text, text, text, integer, text);

-- What processing records about each event.
ALTER TABLE public.stripe_events
ADD COLUMN status text NOT NULL DEFAULT 'received' CHECK (
    status IN ('received', 'processed', 'ignored', 'stale', 'pending', 'failed')
),
ADD COLUMN event_created timestamptz,
ADD COLUMN api_version text,
ADD COLUMN livemode boolean,
ADD COLUMN customer_id text,
ADD COLUMN subscription_id text,
ADD COLUMN detail jsonb;

-- Events recorded before this revision: done, or to be retried.
UPDATE public.stripe_events AS e
SET
    status = CASE WHEN e.processed THEN 'processed' ELSE 'failed' END,
    event_created = CASE
        WHEN e.payload ->> 'created' ~ '^[0-9]{1,12}$' THEN to_timestamp((e.payload ->> 'created')::bigint)
    END,
    api_version = e.payload ->> 'api_version',
    customer_id = public._stripe_id(e.payload #> '{data,object,customer}')
WHERE e.status = 'received';

COMMENT ON COLUMN public.stripe_events.status IS
'processed, ignored (type not handled), stale (older than the applied state): done, processed = true; '
'pending (customer not linked yet), failed (error, retry_count): processed = false; received: being processed.';

-- Pending events of a customer, in the order they are applied when the link arrives.
CREATE INDEX idx_stripe_events_pending_customer
ON public.stripe_events (customer_id, event_created, stripe_event_id)
WHERE status = 'pending';

-- When a user is linked to a Stripe customer, that customer's pending events apply.
CREATE TRIGGER stripe_customers_apply_pending_events
AFTER INSERT OR UPDATE OF stripe_customer_id ON public.stripe_customers
FOR EACH ROW
WHEN (new.stripe_customer_id IS NOT null)
EXECUTE FUNCTION public._stripe_customers_apply_pending();
