-- Revision 0005 down: remove the credit holds. The ledger is append-only, so
-- once a hold was taken its 'hold' and 'release' entries cannot be removed or
-- rewritten, and the previous revision's ledger cannot hold them: the
-- downgrade refuses (BD072) instead of losing that history. The revision
-- restores billing_cron_jobs v1 right after this file.

-- Refuse while the ledger holds entries only this revision can represent.
DO $guard$
DECLARE
    v_entries bigint;
BEGIN
    SELECT count(*) INTO v_entries
    FROM public.credit_transactions AS t
    WHERE t.transaction_type IN ('hold', 'release');
    IF v_entries > 0 THEN
        RAISE EXCEPTION 'revision 0005 downgrade: the ledger holds credit hold entries (entries=%)', v_entries
            USING ERRCODE = 'BD072',
            HINT = 'credit_transactions is append-only: a database that used credit holds stays at 0005 or later.';
    END IF;
END
$guard$;

-- The sweep's pg_cron job, when pg_cron is installed here (dynamic SQL: the
-- cron schema exists only there).
DO $unschedule$
DECLARE
    v_jobid bigint;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        SELECT j.jobid INTO v_jobid
        FROM public.billing_cron_jobs() AS j
        WHERE j.job_name = 'credit_holds_release';
        IF v_jobid IS NOT NULL THEN
            EXECUTE 'SELECT cron.unschedule($1::bigint)' USING v_jobid;
        END IF;
    END IF;
END
$unschedule$;

DROP FUNCTION IF EXISTS public.release_expired_credit_holds(integer);
DROP FUNCTION IF EXISTS public.release_credit_hold(bigint, text);
DROP FUNCTION IF EXISTS public.commit_credit_hold(bigint, jsonb);
DROP FUNCTION IF EXISTS public.reserve_credits(text, integer, interval, text, text, jsonb);
DROP FUNCTION IF EXISTS public._release_credit_hold(bigint, text, text);
DROP FUNCTION IF EXISTS public._credit_hold_json(public.credit_holds);

DROP TABLE IF EXISTS public.credit_holds;

-- The ledger's previous rules and comment.
ALTER TABLE public.credit_transactions
DROP CONSTRAINT IF EXISTS credit_transactions_hold_release_sign;

ALTER TABLE public.credit_transactions
DROP CONSTRAINT credit_transactions_transaction_type_check;

ALTER TABLE public.credit_transactions
ADD CONSTRAINT credit_transactions_transaction_type_check CHECK (
    transaction_type IN ('allocation', 'usage', 'refund', 'adjustment', 'expiration')
);

COMMENT ON TABLE public.credit_transactions IS
'Append-only credit ledger: signed amount by transaction_type (allocation, refund > 0; usage, expiration < 0; '
'adjustment either), balance_after, unique idempotency_key (invoice:<id> for allocations, refund:<id> for refunds, '
'the caller''s key for usages and adjustments), refund_of (unique). UPDATE, DELETE and TRUNCATE raise BD014.';
