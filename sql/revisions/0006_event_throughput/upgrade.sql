-- Revision 0006 up: stripe_events.payload is stored uncompressed (still out of
-- line when large). A Stripe event is 3 to 10 kB of JSON; compressing it with
-- pglz cost more CPU than the rest of its INSERT, on the webhook's hot path,
-- for about twice the space of a compressed payload over the retention period
-- (stripe_events_retention_days, 90 by default). Rows already stored keep
-- their compression; only new values are affected. Catalog-only change.
ALTER TABLE public.stripe_events ALTER COLUMN payload SET STORAGE EXTERNAL;
