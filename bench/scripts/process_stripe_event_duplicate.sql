-- pgbench script: Stripe re-delivers an event that was already processed (a duplicate: nothing changes).
-- The pool is bench.delivered, k = 1 .. 1000 (DUPLICATE_POOL in bench/stripe_events.py), built the same
-- way as the events of process_stripe_event.sql.
\set k random(1, 1000)
SELECT public.process_stripe_event(bench.stripe_event(d.kind, d.uid, d.n)) FROM bench.delivered AS d WHERE d.k = :k;
