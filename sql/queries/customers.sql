-- name: customer_by_user_or_id
-- The customer mapping of a user id or a Stripe customer id, with the user's
-- subscriptions and the customer's events not done yet.
SELECT
    c.user_id,
    c.stripe_customer_id,
    c.email,
    c.created_at,
    c.updated_at,
    (
        SELECT coalesce(jsonb_agg(s.subscription_id || ' ' || s.status ORDER BY s.subscription_id), '[]'::jsonb)
        FROM billingdb.subscriptions AS s
        WHERE s.user_id = c.user_id
    ) AS subscriptions,
    (
        SELECT count(*)
        FROM public.stripe_events AS e
        WHERE e.customer_id = c.stripe_customer_id AND NOT e.processed
    ) AS events_not_done
FROM billingdb.stripe_customers AS c
WHERE c.user_id = %(key)s OR c.stripe_customer_id = %(key)s;

-- name: unlinked_customers
-- Stripe customers with events waiting for a link to a user (pending), oldest first.
SELECT
    e.customer_id,
    count(*) AS pending_events,
    min(e.event_created) AS first_event,
    max(e.event_created) AS last_event,
    string_agg(DISTINCT e.event_type, ', ') AS event_types
FROM public.stripe_events AS e
WHERE e.status = 'pending'
GROUP BY e.customer_id
ORDER BY min(e.event_created), e.customer_id;
