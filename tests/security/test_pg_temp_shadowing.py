"""(b) A LOGIN member of service_role shadows type names in pg_temp and calls every entry point.

With `SET search_path = ''` PostgreSQL still searches the caller's temporary schema first for
relation and type names: a domain pg_temp.jsonb whose CHECK calls the caller's own function ran
that function as the owner inside any SECURITY DEFINER function that declared a jsonb variable.
With `pg_catalog, pg_temp` the built-in types are found first. The type names tried are read from
the catalog: every type of a function's arguments and result, and every pg_catalog type whose name
appears as a word in a function body (declarations, casts). Every entry point (every function in
public) is called with plausible arguments, after a small life cycle so that the calls reach their
deep paths (a linked customer, a plan, a subscription, credits, a hold, events).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from helpers import call, customer, fund, subscribe
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

#: The attacker's own code: records who ran it (and returns true, so nothing else fails). It names
#: pg_catalog's types explicitly: its own domains would otherwise call it again.
WITNESS = """
CREATE TEMP TABLE witness (run_as pg_catalog.text, type_name pg_catalog.text);
GRANT INSERT ON pg_temp.witness TO PUBLIC;
CREATE FUNCTION pg_temp.witness(value anyelement) RETURNS pg_catalog.bool LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.witness VALUES (current_user, pg_catalog.pg_typeof(value)::pg_catalog.text);
    RETURN true;
END
$$;
"""


def _shadowable_types(conn: psycopg.Connection[Any]) -> list[str]:
    """Type names the functions use: argument and result types, and pg_catalog types named in bodies."""
    rows = conn.execute(
        """
        SELECT p.prosrc AS body,
               ARRAY(SELECT t.typname::text FROM pg_type AS t
                     WHERE t.oid = ANY (p.proargtypes::oid[] || coalesce(p.proallargtypes, '{}') || p.prorettype))
               AS signature_types
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('public', 'billingdb')
        """
    ).fetchall()
    catalog_types = {
        r["typname"] for r in conn.execute(
            """SELECT t.typname FROM pg_type AS t
               WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.typtype IN ('b', 'r', 'm', 'e')
                 AND t.typname !~ '^_' AND t.typisdefined"""
        )
    }
    words = set()
    for r in rows:
        words |= set(re.findall(r"[a-z_][a-z0-9_]*", r["body"].lower()))
        words |= set(r["signature_types"])
    return sorted(words & catalog_types)


def _life_cycle(conn: psycopg.Connection[Any]) -> None:
    call(conn, "set_plan", "price_shadow", "Shadow", 10)
    customer(conn, "u_shadow", "cus_shadow")
    subscribe(conn, "u_shadow", "active", price_id="price_shadow", subscription_id="sub_shadow")
    fund(conn, "u_shadow", 50)


def _event(event_id: str, event_type: str, obj: dict[str, Any]) -> Jsonb:
    return Jsonb({"id": event_id, "object": "event", "type": event_type, "created": 1_900_000_000,
                  "api_version": "2024-06-20", "livemode": False, "data": {"object": obj}})


def _calls(hold_id: int, usage_id: int) -> list[tuple[str, list[Any]]]:
    """One call of every entry point, with arguments that reach past its checks."""
    subscription = {"id": "sub_shadow", "object": "subscription", "customer": "cus_shadow", "status": "past_due",
                    "current_period_start": 1_899_000_000, "current_period_end": 1_901_000_000,
                    "cancel_at_period_end": False, "metadata": {},
                    "items": {"data": [{"price": {"id": "price_shadow"}}]}}
    invoice = {"id": "in_shadow", "object": "invoice", "customer": "cus_shadow", "subscription": "sub_shadow",
               "billing_reason": "subscription_cycle", "status": "paid",
               "lines": {"data": [{"price": {"id": "price_shadow"}, "period": {"start": 1_899_000_000,
                                                                              "end": 1_901_000_000}}]}}
    # A subscription and its paid invoice that only Stripe's API knows: the syncs create and allocate them.
    observed = datetime.now(UTC) - timedelta(seconds=1)
    listed = {**subscription, "id": "sub_shadow_sync", "status": "active"}
    listed_invoice = {**invoice, "id": "in_shadow_sync", "subscription": "sub_shadow_sync"}
    return [
        ("get_user_subscription_state", ["u_shadow"]),
        ("use_credits_validated", ["u_shadow", 1, "story", Jsonb({"k": 1}), "key-shadow"]),
        ("grant_credits", ["u_shadow", 2, "goodwill", "grant-shadow"]),
        ("refund_credits", [usage_id, "failed"]),
        ("reserve_credits", ["u_shadow", 1]),
        ("commit_credit_hold", [hold_id, Jsonb({"ok": True})]),
        ("release_credit_hold", [hold_id, "again"]),
        ("release_expired_credit_holds", [10]),
        ("add_subscription_credits", ["cus_shadow", "in_direct", "sub_shadow", 3, "direct", Jsonb({})]),
        ("apply_subscription_change", ["sub_shadow", "u_shadow", "cus_shadow", "active", "price_shadow",
                                       None, None, False, None, None, "evt_direct"]),
        ("set_plan", ["price_shadow2", "Shadow two", 20]),
        ("set_billing_setting", ["cache_ttl_seconds", "120"]),
        ("get_plan", ["price_shadow"]),
        ("update_subscription_cache", ["u_shadow"]),
        ("clear_expired_subscription_cache", []),
        ("clear_all_subscription_cache", []),
        ("get_subscription_cache_status", []),
        ("get_cache_cleanup_history", [5]),
        ("get_or_create_stripe_customer", ["u_new", "new@example.com"]),
        ("link_stripe_customer", ["u_new", "cus_new"]),
        ("process_stripe_event", [_event("evt_shadow_sub", "customer.subscription.updated", subscription)]),
        ("process_stripe_event", [_event("evt_shadow_inv", "invoice.paid", invoice)]),
        ("process_stripe_event", [_event("evt_shadow_pending", "invoice.paid", {**invoice, "id": "in_p",
                                                                                "customer": "cus_later"})]),
        ("retry_stripe_event", ["evt_shadow_pending"]),
        ("process_stripe_events", [Jsonb([_event("evt_shadow_batch", "customer.subscription.updated",
                                                 {**subscription, "status": "active"}).obj]), False]),
        ("begin_stripe_event_sync", []),
        ("finish_stripe_event_sync", [observed, Jsonb({"fetched": 1}), None]),
        ("sync_stripe_subscription", [Jsonb(listed), observed, True]),
        ("sync_stripe_invoice", [Jsonb(listed_invoice), observed, True]),
        ("purge_stripe_events_batch", [None, 10]),
        ("billing_cron_jobs", []),
        ("schedule_billing_jobs", []),
        ("unschedule_billing_jobs", []),
        ("trim_cron_job_run_details", [None]),
        ("billing_health", []),
        ("reconcile_credits", [None]),
    ]


def test_no_shadowed_type_runs_as_the_owner(conn, service_login_url: str) -> None:  # type: ignore[no-untyped-def]
    _life_cycle(conn)
    hold = call(conn, "reserve_credits", "u_shadow", 2)
    usage = call(conn, "use_credits_validated", "u_shadow", 1)
    owner = conn.execute("SELECT current_user AS u").fetchone()["u"]
    types = _shadowable_types(conn)
    # The names the old attack used are among those found.
    assert {"jsonb", "text", "timestamptz"} <= set(types), types

    with psycopg.connect(service_login_url, autocommit=True, row_factory=dict_row) as attacker:
        attacker.execute(WITNESS)
        shadowed = []
        for name in types:
            try:
                with attacker.transaction():
                    attacker.execute(
                        f"CREATE DOMAIN pg_temp.{name} AS pg_catalog.{name} CHECK (pg_temp.witness(VALUE))"
                    )
                shadowed.append(name)
            except psycopg.Error:
                pass  # not every type can carry a domain (e.g. pseudo-types)
        assert {"jsonb", "text", "timestamptz"} <= set(shadowed), shadowed

        public = {r["proname"] for r in conn.execute("SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace")}
        calls = _calls(hold["hold_id"], usage["transaction_id"])
        assert public == {name for name, _ in calls}, "every entry point is called"
        outcomes = {}
        for name, args in calls:
            placeholders = ", ".join(["%s"] * len(args))
            try:
                with attacker.transaction():
                    attacker.execute(f"SELECT public.{name}({placeholders})", args)
                outcomes[name] = "ok"
            except psycopg.Error as exc:
                outcomes[name] = exc.sqlstate
        runs = attacker.execute("SELECT run_as, type_name FROM pg_temp.witness").fetchall()
    # The calls did run (the life cycle reached them); none ran the attacker's code as the owner.
    assert sum(1 for v in outcomes.values() if v == "ok") >= 20, outcomes
    syncs = ("process_stripe_events", "begin_stripe_event_sync", "finish_stripe_event_sync",
             "sync_stripe_subscription", "sync_stripe_invoice")
    assert {name: outcomes[name] for name in syncs} == dict.fromkeys(syncs, "ok"), outcomes
    # The syncs reached the writer and the allocation path.
    synced = conn.execute("SELECT status FROM billingdb.subscriptions WHERE subscription_id = 'sub_shadow_sync'")
    assert synced.fetchone() == {"status": "active"}
    allocated = conn.execute("SELECT amount FROM public.credit_transactions WHERE reference = 'invoice:in_shadow_sync'")
    assert allocated.fetchone() == {"amount": 10}
    assert [r for r in runs if r["run_as"] == owner] == [], runs
