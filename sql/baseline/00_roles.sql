-- Roles and defaults: Supabase has the roles anon, authenticated and
-- service_role; a plain PostgreSQL gets them NOLOGIN. They are cluster-wide and
-- may be shared, so the downgrade leaves them (holding no billingdb grant).
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
