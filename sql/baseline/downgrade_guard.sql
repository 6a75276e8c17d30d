-- Baseline down, first step (and `billingdb db downgrade`'s check before it
-- runs anything): refuse to drop tables that hold data unless the DBA said so
-- (`--allow-data-loss`, `alembic -x allow_data_loss=true`, or in a SQL
-- session `SET billingdb.allow_data_loss = on`). The cache, its cleanup runs, the Events API sync cursor,
-- the seeded transitions and the settings are not counted: they are derived
-- or restored by an upgrade. The refusal names every table with rows; the
-- migration is one transaction, so nothing has been undone.
DO $guard$
DECLARE
    v_table text;
    v_has_rows boolean;
    v_holding text[] := '{}';
BEGIN
    IF coalesce(current_setting('billingdb.allow_data_loss', true), '') IN ('on', 'true', '1') THEN
        RETURN;
    END IF;
    FOREACH v_table IN ARRAY ARRAY[
        'public.credit_transactions', 'public.stripe_events', 'billingdb.credit_balances', 'billingdb.credit_holds',
        'billingdb.credit_shortfalls',
        'billingdb.subscriptions', 'billingdb.stripe_customers', 'billingdb.plans', 'billingdb.activity_log'
    ] LOOP
        IF to_regclass(v_table) IS NOT NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT FROM %s)', v_table) INTO v_has_rows;
            IF v_has_rows THEN
                v_holding := v_holding || v_table;
            END IF;
        END IF;
    END LOOP;
    IF cardinality(v_holding) > 0 THEN
        RAISE EXCEPTION 'downgrade refused: it would drop tables that hold rows (%)', array_to_string(v_holding, ', ')
            USING ERRCODE = 'BD072',
                HINT = 'Back them up first (pg_dump --data-only). To drop them anyway: billingdb db downgrade '
                '--allow-data-loss, alembic -x allow_data_loss=true downgrade, or SET billingdb.allow_data_loss = on '
                'before the SQL script.';
    END IF;
END
$guard$;
