-- pgbench script: one new Stripe event for a random seeded user (bench_user_1 .. bench_user_:users).
-- Kinds 1 .. 4 (bench/stripe_events.py): customer.subscription.updated (renewal: the period rolls over)
-- and invoice.paid (subscription_cycle: the plan's credits allocated), each in the basil and the
-- pre-basil API shape. bench.next_event (bench/sql/events.sql) makes a unique event id, invoice id and
-- created time for each call, so every call does real work.
\set uid random(1, :users)
\set kind random(1, 4)
SELECT public.process_stripe_event(bench.next_event(:kind, :uid));
