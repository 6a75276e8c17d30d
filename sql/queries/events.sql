-- name: process_stripe_event
-- Record, dispatch and answer one Stripe event: {event_id, status, detail}.
SELECT public.process_stripe_event(%(event)s::jsonb) AS result;

-- name: process_stripe_events
-- A batch of events in one transaction, in order: the JSON array of their results.
SELECT public.process_stripe_events(%(events)s::jsonb, %(advance_cursor)s) AS result;

-- name: begin_stripe_event_sync
-- Start an Events API sync (the sync's session lock): {started, cursor_created, cursor_event_id}.
SELECT public.begin_stripe_event_sync() AS result;

-- name: finish_stripe_event_sync
-- Record the sync's end (counts, error) and release its lock.
SELECT public.finish_stripe_event_sync(%(started_at)s, %(counts)s::jsonb, %(error)s) AS result;

-- name: retry_stripe_event
-- Re-process a failed or pending event from its stored payload.
SELECT public.retry_stripe_event(%(event_id)s) AS result;

-- name: list_stripe_events
-- The runbook's view of the event log, newest first; status and since are optional filters.
SELECT
    e.stripe_event_id,
    e.event_type,
    e.object_id,
    e.status,
    e.processed,
    e.error,
    e.retry_count,
    e.customer_id,
    e.subscription_id,
    e.event_created,
    e.created_at,
    e.processed_at
FROM public.stripe_events AS e
WHERE
    (%(status)s::text IS null OR e.status = %(status)s::text)
    AND e.created_at >= coalesce(%(since)s::timestamptz, '-infinity'::timestamptz)
ORDER BY e.created_at DESC, e.id DESC
LIMIT %(max_rows)s;

-- name: get_stripe_event
-- One event's whole record, payload included.
SELECT
    e.stripe_event_id,
    e.event_type,
    e.object_id,
    e.status,
    e.processed,
    e.processed_at,
    e.error,
    e.retry_count,
    e.api_version,
    e.livemode,
    e.customer_id,
    e.subscription_id,
    e.event_created,
    e.created_at,
    e.detail,
    e.payload
FROM public.stripe_events AS e
WHERE e.stripe_event_id = %(event_id)s;

-- name: failed_stripe_event_ids
-- Every event that needs a retry (failed, or marked unprocessed by hand), oldest first.
SELECT e.stripe_event_id
FROM public.stripe_events AS e
WHERE NOT e.processed AND e.status <> 'pending'
ORDER BY e.event_created, e.stripe_event_id;

-- name: stripe_event_statuses
-- The current status of each of these events (a replay's summary).
SELECT
    e.stripe_event_id,
    e.status
FROM public.stripe_events AS e
WHERE e.stripe_event_id = any(%(event_ids)s::text[]);
