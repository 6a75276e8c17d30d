-- name: set_cache_ttl
-- The subscription cache's time to live (billing_settings.cache_ttl_seconds), in seconds.
INSERT INTO billingdb.billing_settings AS s (name, value)
VALUES ('cache_ttl_seconds', %(ttl)s::text)
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- name: clear_cache
-- Empty the subscription cache.
SELECT public.clear_all_subscription_cache() AS cleared;

-- name: warm_cache
-- Read every seeded user's state once so that the next reads are cache hits.
SELECT count(public.get_user_subscription_state(%(prefix)s::text || g.n)) AS warmed
FROM generate_series(0, %(users)s::integer) AS g (n);
