-- The ledger: one balance per user and the append-only credit_transactions,
-- updated together in one transaction (balance = sum(amount) at every commit,
-- never below zero), and the entry points that spend, grant, refund and
-- allocate credits.

-- One balance per user, updated in the same transaction as each ledger entry.
CREATE TABLE billingdb.credit_balances (
    user_id text PRIMARY KEY CHECK (btrim(user_id) <> ''),
    balance integer NOT NULL DEFAULT 0 CHECK (balance >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE billingdb.credit_balances IS
'Current credit balance per user; always equals sum(credit_transactions.amount) of that user and is never negative.';

-- _valid_credit_transaction: credit_transactions' row rules, the table's one CHECK.
-- Nine CHECK constraints cost about 30 microseconds per INSERT: PostgreSQL reads each one's stored
-- expression tree and plans it again for every statement that writes the table. A PL/pgSQL function is
-- compiled once per session; the CHECK that calls it costs a fifth of that. IMMUTABLE (the rules read
-- only the row), no table access, so neither SECURITY DEFINER nor SET search_path.
CREATE OR REPLACE FUNCTION billingdb._valid_credit_transaction(
    transaction_type text,
    amount integer,
    balance_after integer,
    refund_of bigint,
    metadata jsonb,
    user_id text
)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SECURITY INVOKER
AS $function$
BEGIN
    -- As a CHECK reads it: false breaks a rule, true or null (a null input) passes.
    RETURN
        -- A known type, a non-zero amount whose sign the type fixes.
        transaction_type IN (
            'allocation', 'usage', 'refund', 'adjustment', 'expiration', 'hold', 'release', 'clawback', 'reinstatement'
        )
        AND amount <> 0
        AND (transaction_type NOT IN ('allocation', 'refund', 'release', 'reinstatement') OR amount > 0)
        AND (transaction_type NOT IN ('usage', 'expiration', 'hold', 'clawback') OR amount < 0)
        -- A refund, and only a refund, names the usage it refunds.
        AND (transaction_type = 'refund') = (refund_of IS NOT NULL)
        -- The balance after the entry is never negative.
        AND balance_after >= 0
        AND pg_catalog.jsonb_typeof(metadata) = 'object'
        AND pg_catalog.btrim(user_id) <> '';
END
$function$;

COMMENT ON FUNCTION billingdb._valid_credit_transaction(text, integer, integer, bigint, jsonb, text) IS
'Internal, the CHECK of credit_transactions (constraint credit_transactions_valid). Contract: false when a row breaks '
'a rule, else true (null when an input it needs is null, which a CHECK passes). Rules: transaction_type is one of '
'allocation, usage, refund, adjustment, expiration, hold, release, clawback, reinstatement; amount is not 0; '
'allocation, refund, release and reinstatement add (amount > 0); usage, expiration, hold and clawback take '
'(amount < 0); refund_of is set exactly for a refund; '
'balance_after >= 0; metadata is a JSON object; user_id is not blank. IMMUTABLE: changing the rules needs a new '
'version and a revision that validates the stored rows again.';

REVOKE ALL ON FUNCTION billingdb._valid_credit_transaction(text, integer, integer, bigint, jsonb, text)
FROM public, anon, authenticated;

-- The ledger: append-only, signed amounts, the balance after each entry.
CREATE TABLE public.credit_transactions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL,
    amount integer NOT NULL,
    transaction_type text NOT NULL,
    description text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The caller's key (use_credits_validated, grant_credits): unique per user.
    idempotency_key text,
    balance_after integer NOT NULL,
    refund_of bigint REFERENCES public.credit_transactions (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- billingdb's own reference for an entry it makes (invoice:<id>, expiration:<id>,
    -- refund:<id>, hold:<id>, hold:<id>:release, hold:<id>:usage): unique, in a
    -- column of its own, so that no caller's key can take one.
    reference text,
    -- The row rules, in one CHECK (see _valid_credit_transaction).
    CONSTRAINT credit_transactions_valid CHECK (
        billingdb._valid_credit_transaction(transaction_type, amount, balance_after, refund_of, metadata, user_id)
    )
);

-- A caller's key names one entry of that user, and billingdb's reference one
-- entry. Partial: the many entries without a key or a reference (a usage
-- without a key, an allocation's caller key) cost no index entry.
CREATE UNIQUE INDEX credit_transactions_user_idempotency_key
ON public.credit_transactions (user_id, idempotency_key) WHERE idempotency_key IS NOT null;

CREATE UNIQUE INDEX credit_transactions_reference_key
ON public.credit_transactions (reference) WHERE reference IS NOT null;

-- A usage is refunded at most once.
CREATE UNIQUE INDEX idx_credit_transactions_refund_of
ON public.credit_transactions (refund_of) WHERE refund_of IS NOT null;

CREATE INDEX idx_credit_transactions_user_created
ON public.credit_transactions (user_id, created_at);

-- The runbook looks allocations up by invoice: WHERE metadata->>'invoice_id' = 'in_...'.
CREATE INDEX idx_credit_transactions_invoice_id
ON public.credit_transactions ((metadata ->> 'invoice_id'));

-- A refund or a dispute names a charge or a payment intent: the allocation it paid for.
CREATE INDEX idx_credit_transactions_allocation_charge
ON public.credit_transactions ((metadata ->> 'charge_id')) WHERE transaction_type = 'allocation';

CREATE INDEX idx_credit_transactions_allocation_payment_intent
ON public.credit_transactions ((metadata ->> 'payment_intent_id')) WHERE transaction_type = 'allocation';

COMMENT ON TABLE public.credit_transactions IS
'Append-only credit ledger: signed amount by transaction_type (allocation, refund, release, reinstatement > 0; '
'usage, expiration, hold, clawback < 0; adjustment either), balance_after, idempotency_key (the caller''s key of a usage or an adjustment, '
'unique per user), reference (billingdb''s own, unique: invoice:<id> for allocations, expiration:<id>, refund:<id> '
'for refunds, hold:<hold_id>, hold:<hold_id>:release and hold:<hold_id>:usage for credit holds), refund_of '
'(unique). UPDATE, DELETE and TRUNCATE raise BD014.';

-- _credit_transactions_append_only: the ledger's guard trigger.
CREATE OR REPLACE FUNCTION billingdb._credit_transactions_append_only()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    -- Row level: name the entry someone tried to change.
    IF tg_level = 'ROW' THEN
        RAISE EXCEPTION 'credit_transactions is append-only (operation=%, id=%)', tg_op, old.id
            USING ERRCODE = 'BD014',
                HINT = 'Correct a balance with a new entry: grant_credits() or refund_credits().';
    END IF;
    -- Statement level (TRUNCATE).
    RAISE EXCEPTION 'credit_transactions is append-only (operation=%)', tg_op
        USING ERRCODE = 'BD014',
            HINT = 'Correct a balance with a new entry: grant_credits() or refund_credits().';
END
$function$;

COMMENT ON FUNCTION billingdb._credit_transactions_append_only() IS
'Internal trigger of credit_transactions: every UPDATE, DELETE or TRUNCATE raises BD014 (the ledger is append-only; '
'corrections are new entries).';

REVOKE ALL ON FUNCTION billingdb._credit_transactions_append_only() FROM public, anon, authenticated;

-- UPDATE, DELETE and TRUNCATE raise: corrections are new entries.
CREATE TRIGGER credit_transactions_append_only
BEFORE UPDATE OR DELETE ON public.credit_transactions
FOR EACH ROW EXECUTE FUNCTION billingdb._credit_transactions_append_only();

CREATE TRIGGER credit_transactions_no_truncate
BEFORE TRUNCATE ON public.credit_transactions
FOR EACH STATEMENT EXECUTE FUNCTION billingdb._credit_transactions_append_only();

-- Credits that money going back (a refund, a lost dispute) should have taken
-- back but could not, because they were already spent: the balance never goes
-- below zero, so the rest is recorded here for reconcile and health to report.
CREATE TABLE billingdb.credit_shortfalls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL,
    allocation_id bigint NOT NULL,
    invoice_id text,
    cause text NOT NULL CHECK (cause IN ('refund', 'dispute')),
    source_id text NOT NULL,
    credits integer NOT NULL CHECK (credits > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);

CREATE INDEX idx_credit_shortfalls_allocation ON billingdb.credit_shortfalls (allocation_id, cause, source_id);

COMMENT ON TABLE billingdb.credit_shortfalls IS
'Credits a refund or a dispute should have clawed back but could not (already spent): user, allocation, invoice, '
'cause (refund, dispute), source (charge or dispute id), credits; resolved_at when a won dispute settles it. '
'Reported by reconcile_credits (clawback_shortfall) and billing_health.';

-- Private: row level security with no policy (only the owner, through the
-- entry points, reads or writes), and no privilege for any other role.
ALTER TABLE billingdb.credit_balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE billingdb.credit_shortfalls ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON TABLE billingdb.credit_balances, billingdb.credit_shortfalls FROM public, anon, authenticated, service_role;

-- The ledger is part of the interface: service_role reads it (the runbook's
-- queries); only the entry points write it.
ALTER TABLE public.credit_transactions ENABLE ROW LEVEL SECURITY;

CREATE POLICY service_role_read ON public.credit_transactions
FOR SELECT TO service_role USING (true);

REVOKE ALL ON TABLE public.credit_transactions FROM public, anon, authenticated, service_role;
GRANT SELECT ON TABLE public.credit_transactions TO service_role;

-- _lock_user: one SQL expression, inlined by the planner into its callers (a
-- SECURITY DEFINER function or one with SET is never inlined). An advisory
-- lock needs no privilege, so definer rights would give it nothing.
CREATE OR REPLACE FUNCTION billingdb._lock_user(user_id text)
RETURNS void
LANGUAGE sql
VOLATILE
SECURITY INVOKER
AS $function$
    -- Class 1111769685 ('BDBU') keeps these keys apart from other advisory locks;
    -- a hash collision only serialises two users, it never breaks anything.
    SELECT pg_catalog.pg_advisory_xact_lock(1111769685, pg_catalog.hashtext(user_id))
$function$;

COMMENT ON FUNCTION billingdb._lock_user(text) IS
'Internal, inlined into its callers (no table access, so neither SECURITY DEFINER nor SET search_path). Contract: '
'takes the exclusive transaction-level advisory lock of user_id (class 1111769685, key '
'hashtext(user_id)). Every function that writes a user''s billing state takes it first, before any row lock, and '
'holds it to commit: the writes of one user are serialised (so an idempotency key is checked after any earlier call '
'with it committed, and ledger ids are in commit order per user), and the user''s cache row is computed from '
'committed data only. A transaction that writes several users locks them one at a time; callers that need several '
'at once must lock them in sorted user_id order to avoid deadlocks.';

REVOKE ALL ON FUNCTION billingdb._lock_user(text) FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION billingdb._try_lock_user(user_id text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_user_id constant text := _try_lock_user.user_id;
BEGIN
    -- The same key as _lock_user, without waiting. Exclusive, not shared: a
    -- transaction that reads (miss) and then writes the same user must not hold
    -- a shared lock that a concurrent twin's write waits on (deadlock, 40P01).
    RETURN pg_try_advisory_xact_lock(1111769685, hashtext(v_user_id));
END
$function$;

COMMENT ON FUNCTION billingdb._try_lock_user(text) IS
'Internal. Contract: tries, without waiting, to take user_id''s exclusive advisory lock (see _lock_user) until '
'commit; true when taken (also when this transaction already holds it). A cache miss stores its row only when '
'it holds this lock: no write of the user is then in flight, so the stored row cannot be older than the last '
'committed change.';

REVOKE ALL ON FUNCTION billingdb._try_lock_user(text) FROM public, anon, authenticated;

-- _append_credit_transaction: the one place that writes the ledger.
CREATE OR REPLACE FUNCTION billingdb._append_credit_transaction(
    user_id text,
    amount integer,
    transaction_type text,
    description text,
    metadata jsonb,
    idempotency_key text,
    reference text,
    refund_of bigint
)
RETURNS public.credit_transactions
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_user_id constant text := _append_credit_transaction.user_id;
    v_amount constant integer := _append_credit_transaction.amount;
    v_type constant text := _append_credit_transaction.transaction_type;
    v_description constant text := _append_credit_transaction.description;
    v_metadata constant jsonb := coalesce(_append_credit_transaction.metadata, '{}'::jsonb);
    v_key constant text := _append_credit_transaction.idempotency_key;
    v_reference constant text := _append_credit_transaction.reference;
    v_refund_of constant bigint := _append_credit_transaction.refund_of;
    v_balance integer;
    v_row public.credit_transactions;
BEGIN
    IF v_amount > 0 THEN
        -- A credit: create the balance row or add to it, up to the largest
        -- balance an integer holds (no bare "integer out of range" from here).
        INSERT INTO billingdb.credit_balances AS b (user_id, balance)
        VALUES (v_user_id, v_amount)
        ON CONFLICT ON CONSTRAINT credit_balances_pkey DO UPDATE
        SET balance = b.balance + excluded.balance, updated_at = now()
        WHERE b.balance <= 2147483647 - excluded.balance
        RETURNING b.balance INTO v_balance;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the balance would exceed 2147483647 credits (user_id=%, amount=%, balance=%)',
                v_user_id, v_amount,
                (SELECT b.balance FROM billingdb.credit_balances AS b WHERE b.user_id = v_user_id)
                USING ERRCODE = '22023', HINT = 'A balance is an integer; credit less.';
        END IF;
    ELSE
        -- A debit: one conditional UPDATE, never read-then-write. No row means
        -- the balance is too low (or the user has none): report, change nothing.
        UPDATE billingdb.credit_balances AS b
        SET balance = b.balance + v_amount, updated_at = now()
        WHERE b.user_id = v_user_id AND b.balance >= -v_amount
        RETURNING b.balance INTO v_balance;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;

    -- The entry, with the balance after it. The caller's key is unique per
    -- user and billingdb's reference unique overall: a clash (only possible
    -- with another kind of call, since a user's calls are serialised by
    -- _lock_user and check their key first) raises, which also undoes the
    -- balance change above.
    INSERT INTO public.credit_transactions AS t (
        user_id, amount, transaction_type, description, metadata, idempotency_key, reference, balance_after,
        refund_of
    )
    VALUES (v_user_id, v_amount, v_type, v_description, v_metadata, v_key, v_reference, v_balance, v_refund_of)
    ON CONFLICT DO NOTHING
    RETURNING t.* INTO v_row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency key already used by another call (idempotency_key=%, reference=%, user_id=%)',
            quote_nullable(v_key), quote_nullable(v_reference), v_user_id
            USING ERRCODE = 'BD012', HINT = 'Use a new key for a different call.';
    END IF;
    RETURN v_row;
END
$function$;

COMMENT ON FUNCTION billingdb._append_credit_transaction(text, integer, text, text, jsonb, text, text, bigint) IS
'Internal. Contract: appends one ledger entry of user_id and moves the balance with it in the same transaction: '
'amount > 0 upserts the balance row; amount < 0 is one conditional UPDATE ... WHERE balance >= -amount RETURNING, '
'and returns null (nothing written) when the balance is too low or missing. Returns the new credit_transactions row '
'(balance_after set). idempotency_key is a caller''s key (unique per user), reference billingdb''s own (unique). '
'The caller holds _lock_user(user_id) and validated the arguments. Errors: BD012 when the key or the reference is '
'already taken (the balance change is undone with it); 22023 when a credit would take the balance above '
'2147483647.';

REVOKE ALL ON FUNCTION billingdb._append_credit_transaction(text, integer, text, text, jsonb, text, text, bigint)
FROM public, anon, authenticated;

CREATE OR REPLACE FUNCTION billingdb._store_cached_balance(user_id text, balance integer)
RETURNS void
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_user_id constant text := _store_cached_balance.user_id;
    v_balance constant integer := _store_cached_balance.balance;
BEGIN
    -- Only the balance changed: the row keeps its subscription part, its
    -- cached_at and its expires_at (no indexed column changes: a HOT update).
    UPDATE public.subscription_cache AS c
    SET
        credits_balance = v_balance,
        state = c.state || jsonb_build_object('credits_balance', v_balance)
    WHERE c.user_id = v_user_id;
END
$function$;

COMMENT ON FUNCTION billingdb._store_cached_balance(text, integer) IS
'Internal. Contract: after a ledger write that changed only user_id''s balance (not a subscription), sets '
'credits_balance to balance in the user''s subscription_cache row, in the column and in state, when such a row '
'exists; cached_at, expires_at and the subscription part stay as they are (the balance is the only part of the '
'state that depends on the ledger). No row: nothing to do (the next read computes the state). The caller holds '
'_lock_user(user_id).';

REVOKE ALL ON FUNCTION billingdb._store_cached_balance(text, integer) FROM public, anon, authenticated;

-- use_credits_validated: spend credits, checked and race-free.
CREATE OR REPLACE FUNCTION public.use_credits_validated(
    user_id text,
    amount integer,
    description text DEFAULT null,
    metadata jsonb DEFAULT '{}'::jsonb,
    idempotency_key text DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_user_id constant text := use_credits_validated.user_id;
    v_amount constant integer := use_credits_validated.amount;
    v_description constant text := coalesce(nullif(btrim(use_credits_validated.description), ''), 'Credit usage');
    v_metadata constant jsonb := coalesce(use_credits_validated.metadata, '{}'::jsonb);
    v_key constant text := use_credits_validated.idempotency_key;
    v_prior public.credit_transactions;
    v_state jsonb;
    v_code text;
    v_tx public.credit_transactions;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    IF
        length(v_user_id) > 255 OR length(v_key) > 255 OR length(v_description) > 1000
        OR (v_metadata <> '{}'::jsonb AND jsonb_typeof(v_metadata) = 'object')
    THEN
        PERFORM billingdb._check_text('use_credits_validated', 'user_id', v_user_id, 255);
        PERFORM billingdb._check_text('use_credits_validated', 'idempotency_key', v_key, 255);
        PERFORM billingdb._check_text('use_credits_validated', 'description', v_description, 1000);
        PERFORM billingdb._check_metadata('use_credits_validated', 'metadata', v_metadata);
    END IF;

    -- Arguments: a user, a positive amount, an object as metadata, a non-blank key.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'use_credits_validated: user_id is required (user_id=%)',
            coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;
    IF v_amount IS NULL OR v_amount <= 0 THEN
        RAISE EXCEPTION 'use_credits_validated: amount must be a positive integer (user_id=%, amount=%)',
            v_user_id, coalesce(v_amount::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Spend at least 1 credit; refunds go through refund_credits().';
    END IF;
    IF jsonb_typeof(v_metadata) <> 'object' THEN
        RAISE EXCEPTION 'use_credits_validated: metadata must be a JSON object (user_id=%, metadata=%)',
            v_user_id, v_metadata
            USING ERRCODE = '22023';
    END IF;
    IF v_key IS NOT NULL AND btrim(v_key) = '' THEN
        RAISE EXCEPTION 'use_credits_validated: idempotency_key is blank (user_id=%)', v_user_id
            USING ERRCODE = '22023', HINT = 'Pass null for no key.';
    END IF;

    -- Serialise with every other write of this user. Idempotency rests on this
    -- lock: a concurrent call with the same key waits here until the first one
    -- commits and then finds its entry below; the unique index on
    -- idempotency_key is the backstop (BD012 from _append_credit_transaction).
    PERFORM billingdb._lock_user(v_user_id);

    -- A key seen before: return the first result, deduct nothing.
    IF v_key IS NOT NULL THEN
        SELECT t.* INTO v_prior FROM public.credit_transactions AS t
        WHERE t.user_id = v_user_id AND t.idempotency_key = v_key;
        IF FOUND THEN
            IF v_prior.user_id <> v_user_id OR v_prior.transaction_type <> 'usage' OR v_prior.amount <> -v_amount THEN
                RAISE EXCEPTION 'use_credits_validated: idempotency key already used for another call '
                    '(idempotency_key=%, user_id=%, amount=%, first_transaction_id=%)',
                    quote_literal(v_key), v_user_id, v_amount, v_prior.id
                    USING ERRCODE = 'BD012', HINT = 'Use a new key for a different call.';
            END IF;
            RETURN jsonb_build_object(
                'success', true, 'code', NULL,
                'message', format('Used %s credits (replayed)', v_amount),
                'user_id', v_user_id, 'transaction_id', v_prior.id, 'amount', v_amount,
                'balance', v_prior.balance_after, 'replayed', true
            );
        END IF;
    END IF;

    -- The spending rule, on the live state (no write of this user in flight).
    v_state := billingdb._compute_subscription_state(v_user_id);
    v_code := v_state ->> 'reason';
    IF v_code IS NOT NULL THEN
        RETURN jsonb_build_object(
            'success', false, 'code', v_code,
            'message', billingdb._refusal_message(v_state),
            'user_id', v_user_id, 'transaction_id', NULL, 'amount', v_amount,
            'balance', (v_state ->> 'credits_balance')::integer, 'replayed', false
        );
    END IF;

    -- Deduct and record: one conditional UPDATE and the usage entry.
    v_tx := billingdb._append_credit_transaction(
        v_user_id, -v_amount, 'usage', v_description, v_metadata, v_key, NULL, NULL
    );
    IF v_tx.id IS NULL THEN
        RETURN jsonb_build_object(
            'success', false, 'code', 'insufficient_credits',
            'message', format(
                'Insufficient credits: balance %s, requested %s', v_state ->> 'credits_balance', v_amount
            ),
            'user_id', v_user_id, 'transaction_id', NULL, 'amount', v_amount,
            'balance', (v_state ->> 'credits_balance')::integer, 'replayed', false
        );
    END IF;

    -- Refresh the cache: the state above with the new balance (we hold the
    -- user's lock, so nothing else of this user changed in between).
    PERFORM billingdb._store_subscription_cache(
        v_user_id, v_state || jsonb_build_object('credits_balance', v_tx.balance_after)
    );

    RETURN jsonb_build_object(
        'success', true, 'code', NULL,
        'message', format('Used %s credits', v_amount),
        'user_id', v_user_id, 'transaction_id', v_tx.id, 'amount', v_amount,
        'balance', v_tx.balance_after, 'replayed', false
    );
END
$function$;

COMMENT ON FUNCTION public.use_credits_validated(text, integer, text, jsonb, text) IS
'Contract: spends amount credits of user_id if the subscription state allows it and the balance covers it; returns '
'jsonb {success, code, message, user_id, transaction_id, amount, balance, replayed}. code is null on success, else '
'no_subscription | subscription_inactive | period_ended (the spending rule: trialing, active, past_due while the '
'setting past_due_can_spend is true, canceled or cancel_at_period_end until current_period_end) or '
'insufficient_credits; a refusal changes nothing and balance is the current balance. On success one usage entry '
'(amount -amount, metadata, description) is appended, balance is the balance after it, and the user''s cache row is '
'refreshed. The deduction is one conditional UPDATE (balance >= amount), so concurrent callers never overdraw. '
'idempotency_key (optional, unique per user): a key already used by a successful usage of the same user and amount '
'returns that '
'first result (its transaction_id and balance after) with replayed true and deducts nothing; a refused call leaves '
'no trace, so a retry is evaluated anew. Concurrent calls with one key are serialised by the user''s advisory lock '
'(_lock_user): exactly one deducts. Errors: 22023 when user_id is null or blank, amount is null or <= 0, metadata '
'is not a JSON object or the key is blank; BD012 when the key was used for a different call (other user, kind or '
'amount).';

REVOKE ALL ON FUNCTION public.use_credits_validated(text, integer, text, jsonb, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.use_credits_validated(text, integer, text, jsonb, text) TO service_role;

-- grant_credits: a manual adjustment by an operator.
CREATE OR REPLACE FUNCTION public.grant_credits(
    user_id text,
    amount integer,
    reason text,
    idempotency_key text DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_user_id constant text := grant_credits.user_id;
    v_amount constant integer := grant_credits.amount;
    v_reason constant text := nullif(btrim(grant_credits.reason), '');
    v_key constant text := grant_credits.idempotency_key;
    v_prior public.credit_transactions;
    v_balance integer;
    v_tx public.credit_transactions;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_text('grant_credits', 'user_id', v_user_id, 255);
    PERFORM billingdb._check_text('grant_credits', 'reason', v_reason, 1000);
    PERFORM billingdb._check_text('grant_credits', 'idempotency_key', v_key, 255);

    -- Arguments: a user, a non-zero amount, a non-blank key.
    IF v_user_id IS NULL OR btrim(v_user_id) = '' THEN
        RAISE EXCEPTION 'grant_credits: user_id is required (user_id=%)', coalesce(quote_literal(v_user_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Pass the application user id.';
    END IF;
    IF v_amount IS NULL OR v_amount = 0 THEN
        RAISE EXCEPTION 'grant_credits: amount must be a non-zero integer (user_id=%, amount=%)',
            v_user_id, coalesce(v_amount::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Positive adds credits, negative removes them.';
    END IF;
    IF v_key IS NOT NULL AND btrim(v_key) = '' THEN
        RAISE EXCEPTION 'grant_credits: idempotency_key is blank (user_id=%)', v_user_id
            USING ERRCODE = '22023', HINT = 'Pass null for no key.';
    END IF;

    -- Serialise with every other write of this user (see use_credits_validated).
    PERFORM billingdb._lock_user(v_user_id);

    -- A key seen before: return the first result, change nothing.
    IF v_key IS NOT NULL THEN
        SELECT t.* INTO v_prior FROM public.credit_transactions AS t
        WHERE t.user_id = v_user_id AND t.idempotency_key = v_key;
        IF FOUND THEN
            IF v_prior.user_id <> v_user_id OR v_prior.transaction_type <> 'adjustment'
                OR v_prior.amount <> v_amount THEN
                RAISE EXCEPTION 'grant_credits: idempotency key already used for another call '
                    '(idempotency_key=%, user_id=%, amount=%, first_transaction_id=%)',
                    quote_literal(v_key), v_user_id, v_amount, v_prior.id
                    USING ERRCODE = 'BD012', HINT = 'Use a new key for a different call.';
            END IF;
            RETURN jsonb_build_object(
                'success', true, 'code', NULL, 'message', format('Adjusted by %s credits (replayed)', v_amount),
                'user_id', v_user_id, 'transaction_id', v_prior.id, 'amount', v_amount,
                'balance', v_prior.balance_after, 'replayed', true
            );
        END IF;
    END IF;

    -- The adjustment; a negative one never takes the balance below zero.
    v_tx := billingdb._append_credit_transaction(
        v_user_id, v_amount, 'adjustment', coalesce(v_reason, 'Manual adjustment'),
        jsonb_build_object('reason', v_reason), v_key, NULL, NULL
    );
    IF v_tx.id IS NULL THEN
        SELECT b.balance INTO v_balance FROM billingdb.credit_balances AS b WHERE b.user_id = v_user_id;
        RETURN jsonb_build_object(
            'success', false, 'code', 'insufficient_credits',
            'message', format('Insufficient credits: balance %s, adjustment %s', coalesce(v_balance, 0), v_amount),
            'user_id', v_user_id, 'transaction_id', NULL, 'amount', v_amount,
            'balance', coalesce(v_balance, 0), 'replayed', false
        );
    END IF;

    -- The activity log and the cache.
    INSERT INTO billingdb.activity_log (user_id, activity_type, details)
    VALUES (
        v_user_id, 'credits_granted',
        jsonb_build_object(
            'amount', v_amount, 'reason', v_reason, 'transaction_id', v_tx.id, 'balance', v_tx.balance_after
        )
    );
    PERFORM billingdb._store_subscription_cache(v_user_id, billingdb._compute_subscription_state(v_user_id));

    RETURN jsonb_build_object(
        'success', true, 'code', NULL, 'message', format('Adjusted by %s credits', v_amount),
        'user_id', v_user_id, 'transaction_id', v_tx.id, 'amount', v_amount,
        'balance', v_tx.balance_after, 'replayed', false
    );
END
$function$;

COMMENT ON FUNCTION public.grant_credits(text, integer, text, text) IS
'Contract: a manual adjustment of user_id''s credits by amount (positive adds, creating the balance row if missing; '
'negative removes), in any subscription state; appends an adjustment entry (description = reason, metadata '
'{reason}), logs credits_granted and refreshes the user''s cache row. Returns jsonb {success, code, message, user_id, '
'transaction_id, amount, balance, replayed}. A negative amount beyond the balance is refused: success false, code '
'insufficient_credits, nothing changed, balance = the current balance. idempotency_key (optional, unique per user): '
'a key already '
'used by an adjustment of the same user and amount returns that first result (balance after it) with replayed true. '
'Errors: 22023 when user_id is null or blank, amount is null or 0, or the key is blank; BD012 when the key was used '
'for a different call.';

REVOKE ALL ON FUNCTION public.grant_credits(text, integer, text, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.grant_credits(text, integer, text, text) TO service_role;

-- refund_credits: give back a usage, once.
CREATE OR REPLACE FUNCTION public.refund_credits(transaction_id bigint, reason text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_transaction_id constant bigint := refund_credits.transaction_id;
    v_reason constant text := nullif(btrim(refund_credits.reason), '');
    v_usage public.credit_transactions;
    v_prior public.credit_transactions;
    v_balance integer;
    v_tx public.credit_transactions;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_text('refund_credits', 'reason', v_reason, 1000);

    -- A transaction id is required.
    IF v_transaction_id IS NULL THEN
        RAISE EXCEPTION 'refund_credits: transaction_id is required (transaction_id=NULL)'
            USING ERRCODE = '22023';
    END IF;

    -- The entry to refund: it exists and is a usage.
    SELECT t.* INTO v_usage FROM public.credit_transactions AS t WHERE t.id = v_transaction_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'refund_credits: unknown credit transaction (transaction_id=%)', v_transaction_id
            USING ERRCODE = 'BD010', HINT = 'Pass the transaction_id returned by use_credits_validated().';
    END IF;
    IF v_usage.transaction_type <> 'usage' THEN
        RAISE EXCEPTION 'refund_credits: only usages can be refunded (transaction_id=%, transaction_type=%)',
            v_transaction_id, v_usage.transaction_type
            USING ERRCODE = 'BD011', HINT = 'Correct other entries with grant_credits().';
    END IF;

    -- Serialise with every other write of this user (a concurrent second
    -- refund of this usage waits here, then finds the first).
    PERFORM billingdb._lock_user(v_usage.user_id);

    -- Refunded already: return the first refund, change nothing.
    SELECT t.* INTO v_prior FROM public.credit_transactions AS t WHERE t.refund_of = v_transaction_id;
    IF FOUND THEN
        SELECT b.balance INTO v_balance FROM billingdb.credit_balances AS b WHERE b.user_id = v_usage.user_id;
        RETURN jsonb_build_object(
            'success', true, 'duplicate', true, 'refund_transaction_id', v_prior.id,
            'transaction_id', v_transaction_id, 'user_id', v_usage.user_id,
            'amount', v_prior.amount, 'balance', coalesce(v_balance, 0)
        );
    END IF;

    -- The refund entry: the usage's amount back, pointing at it.
    v_tx := billingdb._append_credit_transaction(
        v_usage.user_id, -v_usage.amount, 'refund',
        coalesce(v_reason, format('Refund of transaction %s', v_transaction_id)),
        jsonb_build_object('refund_of', v_transaction_id, 'reason', v_reason),
        NULL, 'refund:' || v_transaction_id, v_transaction_id
    );

    -- The activity log and the cache.
    INSERT INTO billingdb.activity_log (user_id, activity_type, details)
    VALUES (
        v_usage.user_id, 'credits_refunded',
        jsonb_build_object(
            'transaction_id', v_transaction_id, 'refund_transaction_id', v_tx.id,
            'amount', v_tx.amount, 'reason', v_reason, 'balance', v_tx.balance_after
        )
    );
    PERFORM billingdb._store_subscription_cache(v_usage.user_id, billingdb._compute_subscription_state(v_usage.user_id));

    RETURN jsonb_build_object(
        'success', true, 'duplicate', false, 'refund_transaction_id', v_tx.id,
        'transaction_id', v_transaction_id, 'user_id', v_usage.user_id,
        'amount', v_tx.amount, 'balance', v_tx.balance_after
    );
END
$function$;

COMMENT ON FUNCTION public.refund_credits(bigint, text) IS
'Contract: refunds a usage entry at most once: appends a refund entry (amount = the credits used, refund_of = '
'transaction_id, reference refund:<id>, description = reason), logs credits_refunded and refreshes the '
'user''s cache row; allowed in any subscription state. Returns jsonb {success, duplicate, refund_transaction_id, '
'transaction_id, user_id, amount, balance}. A second refund of the same usage changes nothing and returns the first '
'refund with duplicate true and the current balance. Errors: 22023 when transaction_id is null; BD010 when no such '
'transaction exists; BD011 when it is not a usage (allocation, refund, adjustment or expiration).';

REVOKE ALL ON FUNCTION public.refund_credits(bigint, text) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.refund_credits(bigint, text) TO service_role;

-- add_subscription_credits: a paid invoice allocates credits, once. The webhook records
-- billing_reason, price and event with the entry; the new balance is set in the user's cache row
-- (_store_cached_balance) instead of recomputing the whole state.
CREATE OR REPLACE FUNCTION public.add_subscription_credits(
    customer_id text,
    invoice_id text,
    subscription_id text,
    credits integer,
    description text DEFAULT null,
    metadata jsonb DEFAULT null
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    v_customer_id constant text := add_subscription_credits.customer_id;
    v_invoice_id constant text := add_subscription_credits.invoice_id;
    v_subscription_id constant text := add_subscription_credits.subscription_id;
    v_credits constant integer := add_subscription_credits.credits;
    v_description constant text := coalesce(
        nullif(btrim(add_subscription_credits.description), ''),
        format('Subscription credits for invoice %s', add_subscription_credits.invoice_id)
    );
    v_reference constant text := 'invoice:' || add_subscription_credits.invoice_id;
    v_extra constant jsonb := add_subscription_credits.metadata;
    v_user_id text;
    v_prior public.credit_transactions;
    v_sub record;
    v_reset boolean := false;
    v_previous public.credit_transactions;
    v_used integer;
    v_granted integer;
    v_balance integer;
    v_expired integer := 0;
    v_expiration public.credit_transactions;
    v_tx public.credit_transactions;
BEGIN
    -- Limits first (see 05_input.sql): an over-long value is a 22023 naming it.
    PERFORM billingdb._check_stripe_id('add_subscription_credits', 'customer_id', v_customer_id, 'cus_');
    PERFORM billingdb._check_stripe_id('add_subscription_credits', 'invoice_id', v_invoice_id, 'in_');
    PERFORM billingdb._check_stripe_id('add_subscription_credits', 'subscription_id', v_subscription_id, 'sub_');
    PERFORM billingdb._check_text('add_subscription_credits', 'description', v_description, 1000);
    PERFORM billingdb._check_metadata('add_subscription_credits', 'metadata', v_extra);

    -- Arguments: Stripe ids of the customer, invoice and subscription; credits > 0.
    IF v_customer_id IS NULL OR v_customer_id !~ '^cus_' THEN
        RAISE EXCEPTION 'add_subscription_credits: malformed customer id (customer_id=%, invoice_id=%)',
            coalesce(quote_literal(v_customer_id), 'NULL'), coalesce(quote_literal(v_invoice_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe customer ids start with cus_.';
    END IF;
    IF v_invoice_id IS NULL OR v_invoice_id !~ '^in_' THEN
        RAISE EXCEPTION 'add_subscription_credits: malformed invoice id (customer_id=%, invoice_id=%)',
            v_customer_id, coalesce(quote_literal(v_invoice_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe invoice ids start with in_.';
    END IF;
    IF v_subscription_id IS NULL OR v_subscription_id !~ '^sub_' THEN
        RAISE EXCEPTION 'add_subscription_credits: malformed subscription id (invoice_id=%, subscription_id=%)',
            v_invoice_id, coalesce(quote_literal(v_subscription_id), 'NULL')
            USING ERRCODE = '22023', HINT = 'Stripe subscription ids start with sub_.';
    END IF;
    IF v_extra IS NOT NULL AND jsonb_typeof(v_extra) <> 'object' THEN
        RAISE EXCEPTION 'add_subscription_credits: metadata must be a JSON object (invoice_id=%, metadata=%)',
            v_invoice_id, left(v_extra::text, 80)
            USING ERRCODE = '22023';
    END IF;
    IF v_credits IS NULL OR v_credits <= 0 THEN
        RAISE EXCEPTION 'add_subscription_credits: credits must be a positive integer (invoice_id=%, credits=%)',
            v_invoice_id, coalesce(v_credits::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;

    -- The user behind the customer.
    SELECT c.user_id INTO v_user_id FROM billingdb.stripe_customers AS c WHERE c.stripe_customer_id = v_customer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add_subscription_credits: unknown customer (customer_id=%, invoice_id=%)',
            v_customer_id, v_invoice_id
            USING ERRCODE = 'BD001',
                HINT = 'Link the customer first: link_stripe_customer(user_id, customer_id); then retry.';
    END IF;

    -- Serialise with every other write of this user (a concurrent duplicate
    -- of this invoice waits here, then finds the first allocation).
    PERFORM billingdb._lock_user(v_user_id);

    -- Allocated already: return the first allocation, change nothing.
    SELECT t.* INTO v_prior FROM public.credit_transactions AS t WHERE t.reference = v_reference;
    IF FOUND THEN
        IF v_prior.user_id <> v_user_id OR v_prior.transaction_type <> 'allocation' THEN
            RAISE EXCEPTION 'add_subscription_credits: invoice already used by another user or call '
                '(invoice_id=%, user_id=%, first_transaction_id=%)', v_invoice_id, v_user_id, v_prior.id
                USING ERRCODE = 'BD012';
        END IF;
        SELECT b.balance INTO v_balance FROM billingdb.credit_balances AS b WHERE b.user_id = v_user_id;
        RETURN jsonb_build_object(
            'success', true, 'duplicate', true, 'transaction_id', v_prior.id, 'user_id', v_user_id,
            'credits', v_prior.amount, 'expired', coalesce((v_prior.metadata ->> 'expired')::integer, 0),
            'expiration_transaction_id', (v_prior.metadata ->> 'expiration_transaction_id')::bigint,
            'balance', coalesce(v_balance, 0), 'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id
        );
    END IF;

    -- The subscription, when known, belongs to this user; its plan says whether
    -- credits reset each period. An unknown subscription (its event not yet
    -- applied) allocates without a reset.
    SELECT s.user_id, s.price_id INTO v_sub
    FROM billingdb.subscriptions AS s
    WHERE s.subscription_id = v_subscription_id;
    IF FOUND THEN
        IF v_sub.user_id <> v_user_id THEN
            RAISE EXCEPTION 'add_subscription_credits: subscription belongs to another user '
                '(subscription_id=%, user_id=%, customer_id=%)', v_subscription_id, v_sub.user_id, v_customer_id
                USING ERRCODE = 'BD013';
        END IF;
        SELECT p.reset_each_period INTO v_reset FROM billingdb.plans AS p WHERE p.price_id = v_sub.price_id;
        v_reset := coalesce(v_reset, false);
    END IF;

    -- Reset: the unused credits of the ended period expire first. They are what
    -- the period's allocations of this subscription granted (the one that
    -- opened the period, and any plan change paid within it) minus the user's
    -- net usage since (usages after it, less the refunds of those usages),
    -- never below 0 and never more than the balance: credits are spent from the
    -- period's allocations first; other credits (grants) stay. A plan change
    -- paid mid-period (subscription_update) opens no period: nothing expires.
    IF v_reset AND (v_extra ->> 'billing_reason') IS DISTINCT FROM 'subscription_update' THEN
        SELECT t.* INTO v_previous
        FROM public.credit_transactions AS t
        WHERE
            t.user_id = v_user_id
            AND t.transaction_type = 'allocation'
            AND t.metadata ->> 'subscription_id' = v_subscription_id
            AND (t.metadata ->> 'billing_reason') IS DISTINCT FROM 'subscription_update'
        ORDER BY t.id DESC
        LIMIT 1;
        IF FOUND THEN
            SELECT coalesce(sum(t.amount), 0) INTO v_granted
            FROM public.credit_transactions AS t
            WHERE
                t.user_id = v_user_id
                AND t.id >= v_previous.id
                AND t.transaction_type = 'allocation'
                AND t.metadata ->> 'subscription_id' = v_subscription_id;
            SELECT coalesce(-sum(t.amount), 0) INTO v_used
            FROM public.credit_transactions AS t
            WHERE
                t.user_id = v_user_id
                AND t.id > v_previous.id
                AND (t.transaction_type = 'usage' OR (t.transaction_type = 'refund' AND t.refund_of > v_previous.id));
            SELECT b.balance INTO v_balance FROM billingdb.credit_balances AS b WHERE b.user_id = v_user_id;
            v_expired := least(coalesce(v_balance, 0), greatest(0, v_granted - v_used));
            IF v_expired > 0 THEN
                v_expiration := billingdb._append_credit_transaction(
                    v_user_id, -v_expired, 'expiration',
                    format('Unused credits of the ended period expire (invoice %s)', v_invoice_id),
                    jsonb_build_object(
                        'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id,
                        'customer_id', v_customer_id, 'expired_allocation_id', v_previous.id
                    ),
                    NULL, 'expiration:' || v_invoice_id, NULL
                );
            END IF;
        END IF;
    END IF;

    -- The allocation; the caller's metadata cannot override billingdb's own keys.
    v_tx := billingdb._append_credit_transaction(
        v_user_id, v_credits, 'allocation', v_description,
        coalesce(v_extra, '{}'::jsonb) || jsonb_build_object(
            'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id, 'customer_id', v_customer_id,
            'expired', v_expired, 'expiration_transaction_id', v_expiration.id
        ),
        NULL, v_reference, NULL
    );

    -- The activity log, and the new balance in the cache row (an allocation changes no subscription).
    INSERT INTO billingdb.activity_log (user_id, activity_type, details)
    VALUES (
        v_user_id, 'credits_allocated',
        jsonb_build_object(
            'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id, 'customer_id', v_customer_id,
            'credits', v_credits, 'expired', v_expired, 'transaction_id', v_tx.id,
            'expiration_transaction_id', v_expiration.id, 'balance', v_tx.balance_after
        )
    );
    PERFORM billingdb._store_cached_balance(v_user_id, v_tx.balance_after);

    RETURN jsonb_build_object(
        'success', true, 'duplicate', false, 'transaction_id', v_tx.id, 'user_id', v_user_id,
        'credits', v_credits, 'expired', v_expired, 'expiration_transaction_id', v_expiration.id,
        'balance', v_tx.balance_after, 'invoice_id', v_invoice_id, 'subscription_id', v_subscription_id
    );
END
$function$;

COMMENT ON FUNCTION public.add_subscription_credits(text, text, text, integer, text, jsonb) IS
'Contract: allocates credits for a paid invoice to the user linked to customer_id, at most once per invoice '
'(reference invoice:<invoice_id>; metadata: the caller''s metadata object (e.g. billing_reason, '
'price_id) overlaid with {invoice_id, subscription_id, customer_id, expired, expiration_transaction_id}); creates '
'the balance row if missing, logs credits_allocated in activity_log and '
'sets the new balance in the user''s cache row when there is one (an allocation changes no subscription, so '
'the rest of the cached state stands). Returns jsonb {success, duplicate, transaction_id, user_id, credits, expired, '
'expiration_transaction_id, balance, invoice_id, subscription_id}. A second call for the same invoice changes nothing '
'and returns the first allocation (its transaction_id, credits, expired) with duplicate true and the current '
'balance. Reset: when the subscription is known and its plan (subscriptions.price_id -> plans) has '
'reset_each_period, the unused credits of the ended period first expire as an expiration entry (negative amount, '
'reference expiration:<invoice_id>, never a delete): unused = least(balance, greatest(0, A - U)) where A is what '
'this subscription''s allocations of the ended period granted (the one that opened it and any plan change paid '
'within it) and U the user''s usages after the period''s first allocation less the refunds of those usages (credits '
'are spent from the period''s allocations first; granted credits do not expire); the first allocation of a '
'subscription, and a plan change paid mid-period (metadata billing_reason subscription_update), expire nothing. An unknown subscription allocates without a reset. Errors: 22023 for a '
'malformed customer (cus_), invoice (in_) or subscription (sub_) id, credits null or <= 0, or metadata not an '
'object; BD001 when no user is '
'linked to customer_id; BD013 when the subscription belongs to another user; BD012 when the invoice was allocated '
'to another user.';

REVOKE ALL ON FUNCTION public.add_subscription_credits(text, text, text, integer, text, jsonb)
FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.add_subscription_credits(text, text, text, integer, text, jsonb) TO service_role;

-- _claw_back_credits: take back what money going back paid for, never below zero.
CREATE OR REPLACE FUNCTION billingdb._claw_back_credits(
    allocation_id bigint,
    cause text,
    source_id text,
    target integer
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_allocation public.credit_transactions;
    v_accounted integer;
    v_due integer;
    v_balance integer;
    v_taken integer;
    v_short integer;
    v_tx public.credit_transactions;
BEGIN
    -- The allocation, and its user's lock (every balance change of a user is serialised).
    SELECT t.* INTO STRICT v_allocation FROM public.credit_transactions AS t WHERE t.id = _claw_back_credits.allocation_id;
    PERFORM billingdb._lock_user(v_allocation.user_id);

    -- What this cause and source already accounted for (clawed back, or recorded
    -- short): only the rest of the target is due, so a redelivery, or a refund
    -- reported again with the same cumulative amount, takes nothing twice.
    SELECT
        coalesce((
            SELECT -sum(t.amount) FROM public.credit_transactions AS t
            WHERE
                t.user_id = v_allocation.user_id
                AND t.transaction_type = 'clawback'
                AND (t.metadata ->> 'allocation_id')::bigint = v_allocation.id
                AND t.metadata ->> 'cause' = _claw_back_credits.cause
                AND t.metadata ->> 'source_id' = _claw_back_credits.source_id
        ), 0)
        + coalesce((
            SELECT sum(f.credits) FROM billingdb.credit_shortfalls AS f
            WHERE
                f.allocation_id = v_allocation.id
                AND f.cause = _claw_back_credits.cause
                AND f.source_id = _claw_back_credits.source_id
        ), 0)
    INTO v_accounted;
    v_due := least(_claw_back_credits.target, v_allocation.amount) - v_accounted;
    IF v_due <= 0 THEN
        RETURN jsonb_build_object('clawed', 0, 'shortfall', 0, 'already', v_accounted, 'user_id', v_allocation.user_id);
    END IF;

    -- Take what the balance holds; record the rest as a shortfall.
    SELECT b.balance INTO v_balance FROM billingdb.credit_balances AS b WHERE b.user_id = v_allocation.user_id;
    v_taken := least(v_due, coalesce(v_balance, 0));
    v_short := v_due - v_taken;
    IF v_taken > 0 THEN
        v_tx := billingdb._append_credit_transaction(
            v_allocation.user_id, -v_taken, 'clawback',
            format('Credits of invoice %s taken back (%s %s)', v_allocation.metadata ->> 'invoice_id',
                _claw_back_credits.cause, _claw_back_credits.source_id),
            jsonb_build_object(
                'allocation_id', v_allocation.id, 'invoice_id', v_allocation.metadata ->> 'invoice_id',
                'cause', _claw_back_credits.cause, 'source_id', _claw_back_credits.source_id,
                'target', _claw_back_credits.target
            ),
            NULL,
            format('clawback:%s:%s:%s:%s', v_allocation.id, _claw_back_credits.cause, _claw_back_credits.source_id,
                v_accounted + v_due),
            NULL
        );
    END IF;
    IF v_short > 0 THEN
        INSERT INTO billingdb.credit_shortfalls (user_id, allocation_id, invoice_id, cause, source_id, credits)
        VALUES (
            v_allocation.user_id, v_allocation.id, v_allocation.metadata ->> 'invoice_id', _claw_back_credits.cause,
            _claw_back_credits.source_id, v_short
        );
    END IF;
    INSERT INTO billingdb.activity_log (user_id, activity_type, details)
    VALUES (
        v_allocation.user_id, 'credits_clawed_back',
        jsonb_build_object(
            'allocation_id', v_allocation.id, 'invoice_id', v_allocation.metadata ->> 'invoice_id',
            'cause', _claw_back_credits.cause, 'source_id', _claw_back_credits.source_id,
            'clawed', v_taken, 'shortfall', v_short, 'transaction_id', v_tx.id
        )
    );
    IF v_taken > 0 THEN
        PERFORM billingdb._store_cached_balance(v_allocation.user_id, v_tx.balance_after);
    END IF;
    RETURN jsonb_build_object(
        'clawed', v_taken, 'shortfall', v_short, 'already', v_accounted, 'user_id', v_allocation.user_id,
        'transaction_id', v_tx.id, 'balance', coalesce(v_tx.balance_after, v_balance)
    );
END
$function$;

COMMENT ON FUNCTION billingdb._claw_back_credits(bigint, text, text, integer) IS
'Internal. Contract: takes back up to target credits of an allocation (at most its amount) for a cause (refund, '
'dispute) and a source (the charge or dispute id): what the same cause and source already accounted for (clawback '
'entries and shortfalls) is not taken again. Takes what the user''s balance holds as a clawback entry (never below '
'zero) and records the rest in credit_shortfalls; logs credits_clawed_back. Returns jsonb {clawed, shortfall, '
'already, user_id, transaction_id, balance}.';

REVOKE ALL ON FUNCTION billingdb._claw_back_credits(bigint, text, text, integer) FROM public, anon, authenticated;

-- _reinstate_credits: a dispute won gives back exactly what it took.
CREATE OR REPLACE FUNCTION billingdb._reinstate_credits(allocation_id bigint, source_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY INVOKER
AS $function$
DECLARE
    v_allocation public.credit_transactions;
    v_clawed integer;
    v_tx public.credit_transactions;
BEGIN
    SELECT t.* INTO STRICT v_allocation FROM public.credit_transactions AS t WHERE t.id = _reinstate_credits.allocation_id;
    PERFORM billingdb._lock_user(v_allocation.user_id);

    -- Given back already (a redelivery, or funds_reinstated then closed as won): nothing again.
    IF EXISTS (
        SELECT FROM public.credit_transactions AS t
        WHERE t.reference = format('reinstatement:%s:%s', v_allocation.id, _reinstate_credits.source_id)
    ) THEN
        RETURN jsonb_build_object('reinstated', 0, 'duplicate', true, 'user_id', v_allocation.user_id);
    END IF;

    -- Exactly what the dispute clawed back; its shortfall is settled.
    SELECT coalesce(-sum(t.amount), 0) INTO v_clawed
    FROM public.credit_transactions AS t
    WHERE
        t.user_id = v_allocation.user_id
        AND t.transaction_type = 'clawback'
        AND (t.metadata ->> 'allocation_id')::bigint = v_allocation.id
        AND t.metadata ->> 'cause' = 'dispute'
        AND t.metadata ->> 'source_id' = _reinstate_credits.source_id;
    UPDATE billingdb.credit_shortfalls AS f
    SET resolved_at = now()
    WHERE f.allocation_id = v_allocation.id AND f.cause = 'dispute' AND f.source_id = _reinstate_credits.source_id
        AND f.resolved_at IS NULL;
    IF v_clawed > 0 THEN
        v_tx := billingdb._append_credit_transaction(
            v_allocation.user_id, v_clawed, 'reinstatement',
            format('Credits of invoice %s given back (dispute %s won)', v_allocation.metadata ->> 'invoice_id',
                _reinstate_credits.source_id),
            jsonb_build_object(
                'allocation_id', v_allocation.id, 'invoice_id', v_allocation.metadata ->> 'invoice_id',
                'source_id', _reinstate_credits.source_id
            ),
            NULL, format('reinstatement:%s:%s', v_allocation.id, _reinstate_credits.source_id), NULL
        );
        PERFORM billingdb._store_cached_balance(v_allocation.user_id, v_tx.balance_after);
    END IF;
    INSERT INTO billingdb.activity_log (user_id, activity_type, details)
    VALUES (
        v_allocation.user_id, 'credits_reinstated',
        jsonb_build_object(
            'allocation_id', v_allocation.id, 'source_id', _reinstate_credits.source_id, 'reinstated', v_clawed
        )
    );
    RETURN jsonb_build_object(
        'reinstated', v_clawed, 'duplicate', false, 'user_id', v_allocation.user_id, 'transaction_id', v_tx.id
    );
END
$function$;

COMMENT ON FUNCTION billingdb._reinstate_credits(bigint, text) IS
'Internal. Contract: a dispute (source_id) won: gives back exactly the credits it clawed back from the allocation '
'(a reinstatement entry, reference reinstatement:<allocation>:<dispute>, once) and marks its shortfalls resolved; '
'logs credits_reinstated. Returns jsonb {reinstated, duplicate, user_id, transaction_id}.';

REVOKE ALL ON FUNCTION billingdb._reinstate_credits(bigint, text) FROM public, anon, authenticated;
