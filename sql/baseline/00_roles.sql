-- Roles, the private schema and defaults: Supabase has the roles anon,
-- authenticated and service_role; a plain PostgreSQL gets them NOLOGIN. They
-- are cluster-wide and may be shared, so the downgrade leaves them.
DO $roles$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
END
$roles$;

-- The private schema: every billingdb object that is not the interface (the
-- tables other than the seed's three, every internal helper, trigger function
-- and row rule). No API role has USAGE on it: they reach its data only
-- through the entry points in public, which run as the owner.
CREATE SCHEMA billingdb;

COMMENT ON SCHEMA billingdb IS
'billingdb''s private schema: internal tables and helpers. No API role (anon, authenticated, service_role) may use '
'it; they call the entry-point functions in public.';

REVOKE ALL ON SCHEMA billingdb FROM public, anon, authenticated, service_role;
