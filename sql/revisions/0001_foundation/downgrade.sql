-- Revision 0001 down: remove every object 0001 created. The roles anon,
-- authenticated and service_role are cluster-wide and may be shared (Supabase
-- owns them), so they stay; with the objects gone they hold no billingdb grant.

DROP FUNCTION IF EXISTS public.link_stripe_customer(text, text);
DROP FUNCTION IF EXISTS public.get_or_create_stripe_customer(text, text);

DROP TABLE IF EXISTS public.subscription_cache;
DROP TABLE IF EXISTS public.stripe_events;
DROP TABLE IF EXISTS public.stripe_customers;
