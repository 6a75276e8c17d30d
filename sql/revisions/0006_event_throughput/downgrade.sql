-- Revision 0006 down: payloads are compressed again (new values only; the
-- stored ones stay as they are, which both revisions read alike). The revision
-- restores the previous function versions before this file and drops the two
-- functions it added.
ALTER TABLE public.stripe_events ALTER COLUMN payload SET STORAGE EXTENDED;

DROP FUNCTION IF EXISTS public._lock_stripe_event(text);
DROP FUNCTION IF EXISTS public._store_cached_balance(text, integer);
