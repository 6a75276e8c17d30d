-- Bench-only helpers for the process_stripe_event benchmarks (issue 4), created in schema bench of
-- the throwaway bench database; never part of sql/ or a migration.

-- name: create_bench_schema
-- The bench's own objects stay out of public.
CREATE SCHEMA IF NOT EXISTS bench;

-- name: create_event_templates
-- Realistic Stripe events as text with tokens (bench/stripe_events.py): @N@ is the event's number
-- (its created time, and part of the event and invoice ids), @U@ the seeded user's number,
-- @P0@ and @PE@ the previous period's start and the new period's end.
CREATE TABLE IF NOT EXISTS bench.event_templates (
    kind integer PRIMARY KEY,
    event_type text NOT NULL,
    api_version text NOT NULL,
    body text NOT NULL,
    -- The body as a format() string (%1$s = N, %2$s = U, %3$s = PE, %4$s = P0): one
    -- pass per event instead of four replace() passes, so the harness costs little
    -- next to the call it measures (the event is still parsed as jsonb every time).
    pattern text GENERATED ALWAYS AS (
        replace(
            replace(replace(replace(replace(body, '%', '%%'), '@N@', '%1$s'), '@U@', '%2$s'), '@PE@', '%3$s'),
            '@P0@', '%4$s'
        )
    ) STORED
);

-- name: clear_event_templates
-- Templates are rewritten once per run.
TRUNCATE bench.event_templates;

-- name: insert_event_template
-- One template (kind 1 .. 4 in bench/stripe_events.py's KINDS order).
INSERT INTO bench.event_templates (kind, event_type, api_version, body)
VALUES (%(kind)s, %(event_type)s, %(api_version)s, %(body)s);

-- name: create_event_seq
-- Event numbers: each event's created time in unix seconds, so that every subscription event is
-- strictly newer than the one before it for the same subscription (the watermark applies it).
CREATE SEQUENCE IF NOT EXISTS bench.event_seq AS bigint;

-- name: start_event_seq
-- Numbers start one second after the seed's subscriptions were written (their watermark is now()).
SELECT setval('bench.event_seq', extract(EPOCH FROM clock_timestamp())::bigint + 1, false) AS first;

-- name: create_stripe_event_function
-- Event number n of a kind for seeded user uid: the template's tokens filled in, parsed as jsonb
-- (a webhook's body is text too, parsed by the server). Generated from the templates once they are
-- written: each pattern is a literal of the function, so a call reads no table and decompresses no
-- stored value (the harness costs little next to the call it measures). STABLE as format() is: the
-- planner inlines it into bench.next_event (it would not inline an IMMUTABLE body that calls format()).
DO $generate$
BEGIN
    EXECUTE (
        SELECT
            format(
                $ddl$
                CREATE OR REPLACE FUNCTION bench.stripe_event(kind integer, uid integer, n bigint)
                RETURNS jsonb
                LANGUAGE sql
                STABLE
                AS $function$ SELECT (CASE kind %s END)::jsonb $function$
                $ddl$,
                string_agg(
                    format('WHEN %s THEN format(%L, n, uid, n + 2592000, n - 2592000)', t.kind, t.pattern),
                    ' ' ORDER BY t.kind
                )
            )
        FROM bench.event_templates AS t
    );
END
$generate$;

-- name: render_event
-- Event number n of a kind for seeded user uid as bench.stripe_event makes it (compared with
-- bench/stripe_events.py's render once per run).
SELECT bench.stripe_event(%(kind)s, %(uid)s, %(n)s) AS event;

-- name: create_next_event_function
-- A new event for seeded user uid: the customer's lock first (process_stripe_event takes the same
-- lock again, which costs nothing), then the next number, so that one customer's events are
-- processed in the order of their numbers and none is stale.
CREATE OR REPLACE FUNCTION bench.next_event(kind integer, uid integer)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
AS $function$
DECLARE
    n bigint;
BEGIN
    PERFORM billingdb._lock_stripe_customer('cus_bench_' || next_event.uid);
    n := nextval('bench.event_seq');
    -- A plain variable as the argument, so that bench.stripe_event is inlined.
    RETURN bench.stripe_event(next_event.kind, next_event.uid, n);
END
$function$;

-- name: reserve_events
-- A block of count event numbers for the HTTP intake run (first .. first + count - 1).
SELECT
    f.first,
    setval('bench.event_seq', f.first + %(count)s - 1) AS last
FROM (SELECT nextval('bench.event_seq') AS first) AS f;

-- name: sample_event
-- One new event of a kind for a seeded user through process_stripe_event, to check that it is processed.
SELECT public.process_stripe_event(bench.next_event(%(kind)s, %(uid)s)) AS result;

-- name: create_delivered
-- Events processed once before the duplicates run, which delivers them again (k = 1 .. pool).
CREATE TABLE IF NOT EXISTS bench.delivered (
    k integer PRIMARY KEY,
    kind integer NOT NULL,
    uid integer NOT NULL,
    n bigint NOT NULL
);

-- name: count_delivered
-- How many events the duplicates run may pick from.
SELECT count(*) AS delivered
FROM bench.delivered;

-- name: seed_delivered
-- Events k = first .. last of the pool (kinds in turn, users in turn), processed the first time.
WITH picked AS (
    INSERT INTO bench.delivered (k, kind, uid, n)
    SELECT
        g.k,
        1 + mod(g.k - 1, %(kinds)s),
        1 + mod(g.k - 1, %(users)s),
        nextval('bench.event_seq')
    FROM generate_series(%(first)s::integer, %(last)s::integer) AS g (k)
    RETURNING delivered.k, delivered.kind, delivered.uid, delivered.n
)

SELECT
    count(*) AS delivered,
    count(*) FILTER (WHERE r.result ->> 'status' IN ('processed', 'stale')) AS done
FROM (
    SELECT public.process_stripe_event(bench.stripe_event(p.kind, p.uid, p.n)) AS result
    FROM picked AS p
    ORDER BY p.n
) AS r;

-- name: sample_duplicate
-- One delivery of an already processed event, to check that it is a duplicate.
SELECT public.process_stripe_event(bench.stripe_event(d.kind, d.uid, d.n)) AS result
FROM bench.delivered AS d
WHERE d.k = 1;

-- name: events_processed
-- Events whose status is processed: a process_stripe_event run must add exactly one per pgbench transaction.
SELECT count(*) AS processed
FROM public.stripe_events AS e
WHERE e.status = 'processed';

-- name: events_done
-- Events recorded as done (processed, ignored or stale): an HTTP intake run adds one per request answered 200.
SELECT count(*) AS done
FROM public.stripe_events AS e
WHERE e.processed;
