-- Taken first by every migration command, in its one transaction: a second
-- command on the same database waits here, then finds nothing left to do.
-- (The key is billingdb's own; a single bigint key never conflicts with the
-- two-integer keys of the functions' advisory locks.)
SELECT pg_catalog.pg_advisory_xact_lock(4747274411);
