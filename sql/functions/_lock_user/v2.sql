-- _lock_user v2 (revision 0006): one SQL expression, inlined by the planner into its callers
-- (v1 was PL/pgSQL with SECURITY DEFINER and SET search_path, which PostgreSQL never inlines).
-- An advisory lock needs no privilege, so definer rights gave it nothing. Same lock.
CREATE OR REPLACE FUNCTION public._lock_user(user_id text)
RETURNS void
LANGUAGE sql
VOLATILE
SECURITY INVOKER
AS $function$
    -- Class 1111769685 ('BDBU') keeps these keys apart from other advisory locks;
    -- a hash collision only serialises two users, it never breaks anything.
    SELECT pg_catalog.pg_advisory_xact_lock(1111769685, pg_catalog.hashtext(user_id))
$function$;

COMMENT ON FUNCTION public._lock_user(text) IS
'Internal, inlined into its callers (no table access, so neither SECURITY DEFINER nor SET search_path). Contract: '
'takes the exclusive transaction-level advisory lock of user_id (class 1111769685, key '
'hashtext(user_id)). Every function that writes a user''s billing state takes it first, before any row lock, and '
'holds it to commit: the writes of one user are serialised (so an idempotency key is checked after any earlier call '
'with it committed, and ledger ids are in commit order per user), and the user''s cache row is computed from '
'committed data only. A transaction that writes several users locks them one at a time; callers that need several '
'at once must lock them in sorted user_id order to avoid deadlocks.';

REVOKE ALL ON FUNCTION public._lock_user(text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public._lock_user(text) TO service_role;
