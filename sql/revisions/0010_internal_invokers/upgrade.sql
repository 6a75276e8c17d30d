-- Revision 0010 up: the internal helpers (the underscore functions other than
-- triggers) run with their caller's rights and search_path: SECURITY INVOKER,
-- no SET clause. Their bodies do not change.
--
-- Why: a SECURITY DEFINER function with SET search_path = '' costs a user and
-- configuration switch on every call, out and back (PostgreSQL sets the GUC,
-- recomputes the search path and re-checks every cached plan against it). One
-- Stripe event went through eight to ten such calls: process_stripe_event, the
-- dispatcher, a handler, then apply_subscription_change or
-- add_subscription_credits and their helpers (issue 4's throughput target).
-- Measured, the gain was within the machines' noise; the privilege change
-- below is why the revision stands.
--
-- Why it is safe: every caller of these helpers is a SECURITY DEFINER entry
-- point (or trigger) with SET search_path = '', so they still run as the
-- owner with an empty search path, and every name in them stays
-- schema-qualified. Called directly, a helper now lends no privilege: a role
-- runs it with its own rights (service_role, which may execute them, cannot
-- write the ledger through _append_credit_transaction any more). Triggers
-- stay SECURITY DEFINER: they run for whoever writes the table.
ALTER FUNCTION public._append_credit_transaction(text, integer, text, text, jsonb, text, bigint) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._apply_pending_stripe_events(text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._apply_stripe_checkout_completed(jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._apply_stripe_invoice_failed(jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._apply_stripe_invoice_paid(jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._apply_stripe_subscription_event(jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._attempt_stripe_event(bigint) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._billing_setting(text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._compute_subscription_state(text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._credit_hold_json(public.credit_holds) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._dispatch_stripe_event(jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._release_credit_hold(bigint, text, text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._spending_refusal(text, boolean, timestamptz) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._store_cached_balance(text, integer) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._store_subscription_cache(text, jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._stripe_invoice_credits(jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION public._try_lock_user(text) SECURITY INVOKER RESET search_path;
