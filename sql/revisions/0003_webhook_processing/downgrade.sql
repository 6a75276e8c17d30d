-- Revision 0003 down: remove webhook processing. add_subscription_credits v2
-- is dropped here and v1 is re-created by the revision right after this file.

DROP TRIGGER IF EXISTS stripe_customers_apply_pending_events ON public.stripe_customers;

DROP FUNCTION IF EXISTS public.retry_stripe_event(text);
DROP FUNCTION IF EXISTS public.process_stripe_event(jsonb);
DROP FUNCTION IF EXISTS public._apply_pending_stripe_events(text);
DROP FUNCTION IF EXISTS public._stripe_customers_apply_pending();
DROP FUNCTION IF EXISTS public._attempt_stripe_event(bigint);
DROP FUNCTION IF EXISTS public._dispatch_stripe_event(jsonb);
DROP FUNCTION IF EXISTS public._apply_stripe_checkout_completed(jsonb);
DROP FUNCTION IF EXISTS public._apply_stripe_invoice_failed(jsonb);
DROP FUNCTION IF EXISTS public._apply_stripe_invoice_paid(jsonb);
DROP FUNCTION IF EXISTS public._apply_stripe_subscription_event(jsonb);
DROP FUNCTION IF EXISTS public._stripe_invoice_credits(jsonb);
DROP FUNCTION IF EXISTS public._stripe_event_refs(jsonb);
DROP FUNCTION IF EXISTS public._lock_stripe_customer(text);
DROP FUNCTION IF EXISTS public._stripe_id(jsonb);
DROP FUNCTION IF EXISTS public.add_subscription_credits(text, text, text, integer, text, jsonb);

DROP INDEX IF EXISTS public.idx_stripe_events_pending_customer;

ALTER TABLE public.stripe_events
DROP COLUMN IF EXISTS detail,
DROP COLUMN IF EXISTS subscription_id,
DROP COLUMN IF EXISTS customer_id,
DROP COLUMN IF EXISTS livemode,
DROP COLUMN IF EXISTS api_version,
DROP COLUMN IF EXISTS event_created,
DROP COLUMN IF EXISTS status;
