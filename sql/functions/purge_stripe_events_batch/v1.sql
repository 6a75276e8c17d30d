-- purge_stripe_events_batch v1 (revision 0004): one short batch of the seed's monthly archive.
--
-- One batch per call, not a procedure that loops and COMMITs: PostgreSQL allows
-- COMMIT only in a routine that is neither SECURITY DEFINER nor has a SET
-- clause, and every billingdb routine is both. The callers loop instead, one
-- transaction per batch: pg_cron by its schedule, `billingdb maintenance run`
-- until a short batch. No lock or snapshot outlives one batch.
CREATE OR REPLACE FUNCTION public.purge_stripe_events_batch(
    older_than interval DEFAULT null,
    batch_size integer DEFAULT 1000
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_older_than constant interval := coalesce(
        purge_stripe_events_batch.older_than,
        make_interval(days => coalesce(public._billing_setting('stripe_events_retention_days'), '90')::integer)
    );
    v_batch_size constant integer := purge_stripe_events_batch.batch_size;
    v_deleted integer;
BEGIN
    -- Events are the idempotency record: Stripe redelivers and lets an operator
    -- resend an event for up to 30 days, so a younger record must stay.
    IF v_older_than < interval '30 days' THEN
        RAISE EXCEPTION 'purge_stripe_events_batch: older_than must be at least 30 days (older_than=%)', v_older_than
            USING ERRCODE = '22023',
            HINT = 'Stripe can deliver an event again within 30 days; a purged event would be applied again.';
    END IF;
    IF v_batch_size IS NULL OR v_batch_size NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'purge_stripe_events_batch: batch_size must be between 1 and 100000 (batch_size=%)',
            coalesce(v_batch_size::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;

    -- One batch of done events (processed, ignored, stale) older than the
    -- cut-off, oldest first; rows another transaction holds are skipped, not
    -- waited for, so this never queues behind webhook processing.
    DELETE FROM public.stripe_events AS e
    WHERE e.id IN (
        SELECT s.id
        FROM public.stripe_events AS s
        WHERE
            s.status IN ('processed', 'ignored', 'stale')
            AND s.processed
            AND s.created_at < now() - v_older_than
        ORDER BY s.created_at, s.id
        LIMIT v_batch_size
        FOR UPDATE SKIP LOCKED
    );
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION public.purge_stripe_events_batch(interval, integer) IS
'Contract: deletes at most batch_size (default 1000, 1..100000) stripe_events that are done (processed = true: '
'status processed, ignored or stale) and were received more than older_than ago (default: setting '
'stripe_events_retention_days, 90), oldest first, skipping rows locked by others; returns how many. Failed, pending '
'and unprocessed events are never deleted. Deleted, not copied: dump them first if they must be kept. To purge a '
'backlog, call it in a loop, one transaction per call, until it returns less than batch_size (billingdb maintenance '
'run does); pg_cron job stripe_events_purge runs one batch every 5 minutes. '
'Errors: 22023 when older_than is under 30 days (Stripe may still resend such events) or batch_size is out of range.';

REVOKE ALL ON FUNCTION public.purge_stripe_events_batch(interval, integer) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.purge_stripe_events_batch(interval, integer) TO service_role;
