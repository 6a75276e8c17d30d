-- Revision 0001: the foundation (the seed's migration 013 and the customer mapping).
--
-- Creates Supabase's roles where they are missing, the tables stripe_events,
-- subscription_cache and stripe_customers with row level security, and revokes
-- everything from PUBLIC and the client roles: only service_role writes.

-- Roles: Supabase has them; a plain PostgreSQL gets them NOLOGIN.
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

-- Which application user is which Stripe customer.
CREATE TABLE public.stripe_customers (
    user_id text PRIMARY KEY CHECK (user_id <> ''),
    email text,
    stripe_customer_id text UNIQUE CHECK (stripe_customer_id ~ '^cus_'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE public.stripe_customers IS
'One row per application user; stripe_customer_id is null until the Stripe customer is linked.';

-- Every Stripe webhook event received, for idempotency and the runbook.
CREATE TABLE public.stripe_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stripe_event_id text NOT NULL UNIQUE CHECK (stripe_event_id <> ''),
    event_type text NOT NULL,
    object_id text,
    payload jsonb NOT NULL,
    processed boolean NOT NULL DEFAULT false,
    processed_at timestamptz,
    error text,
    retry_count integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_stripe_events_unprocessed
ON public.stripe_events (created_at) WHERE NOT processed;

CREATE INDEX idx_stripe_events_object_id ON public.stripe_events (object_id);

CREATE INDEX idx_stripe_events_type_created
ON public.stripe_events (event_type, created_at);

COMMENT ON TABLE public.stripe_events IS
'Stripe webhook events by stripe_event_id (unique): the idempotency record and the processing log.';

-- The 5-minute cache of get_user_subscription_state().
CREATE TABLE public.subscription_cache (
    user_id text PRIMARY KEY,
    stripe_customer_id text,
    subscription_id text,
    status text,
    price_id text,
    plan_name text,
    credits_balance integer,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    can_use_credits boolean NOT NULL DEFAULT false,
    state jsonb NOT NULL DEFAULT '{}'::jsonb,
    cached_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CHECK (expires_at >= cached_at)
);

CREATE INDEX idx_subscription_cache_expires_at
ON public.subscription_cache (expires_at);

COMMENT ON TABLE public.subscription_cache IS
'Per-user subscription state with a time to live; refreshed by every write of that user.';

-- Row level security everywhere; service_role (Supabase: BYPASSRLS) gets a policy
-- too so that a plain PostgreSQL behaves the same.
ALTER TABLE public.stripe_customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.stripe_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.subscription_cache ENABLE ROW LEVEL SECURITY;

CREATE POLICY service_role_all ON public.stripe_customers
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.stripe_events
FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY service_role_all ON public.subscription_cache
FOR ALL TO service_role USING (true) WITH CHECK (true);

-- Supabase's default privileges grant the client roles everything: take it back.
REVOKE ALL ON TABLE
public.stripe_customers,
public.stripe_events,
public.subscription_cache
FROM public, anon, authenticated;

GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE
public.stripe_customers,
public.stripe_events,
public.subscription_cache
TO service_role;
