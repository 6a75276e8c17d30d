"""``billingdb state | credits | plans | cache``: subscription state, the ledger, plans, the cache.

Each command is one call of a SQL function through :class:`billingdb.client.BillingClient`
(``plans sync`` reads Stripe's prices first, then calls set_plan for each change).
Exit codes: 0 done, 1 refused (e.g. insufficient credits) or a billingdb error,
2 when the database cannot be chosen or reached.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC
from typing import Annotated

import stripe
import typer

from billingdb import stripe_api, stripe_plans
from billingdb.cli.options import AsJson, DatabaseUrl, EnvName, open_client, print_json
from billingdb.cli.stripe import ApiBase, ApiKey, fail, stripe_config, stripe_failed
from billingdb.stripe_api import format_amount

__all__ = ["state_command", "credits_app", "plans_app", "cache_app", "settings_app"]

credits_app = typer.Typer(rich_markup_mode=None, help="The credit ledger: balance, history, manual grants.", no_args_is_help=True)
#: Amounts are PostgreSQL integers: a larger number is refused here, with its range, not by the database.
INT_MAX = 2_147_483_647

plans_app = typer.Typer(rich_markup_mode=None, help="Plans: which Stripe price gives how many credits per period.", no_args_is_help=True)
settings_app = typer.Typer(rich_markup_mode=None, help="The billing tunables (cache TTL, past_due grace, retention, health thresholds).",
                            no_args_is_help=True)
cache_app = typer.Typer(rich_markup_mode=None, help="The 5-minute subscription state cache.", no_args_is_help=True)






def state_command(
    user_id: Annotated[str, typer.Argument(help="Application user id (e.g. the Clerk user id).")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Show a user's subscription state (get_user_subscription_state, served from the cache when valid)."""
    with open_client(database_url, env) as client:
        state = client.get_user_subscription_state(user_id)
    if as_json:
        print_json(state)
        return
    spend = "yes" if state.can_use_credits else f"no ({state.reason})"
    typer.echo(f"user              {state.user_id}")
    typer.echo(f"status            {state.status or '-'}")
    typer.echo(f"plan              {state.plan or '-'} ({state.price_id or 'no price'})")
    typer.echo(f"credits           {state.credits_balance}")
    typer.echo(f"period ends       {state.current_period_end or '-'}"
               + (" (cancels at period end)" if state.cancel_at_period_end else ""))
    typer.echo(f"can use credits   {spend}")
    typer.echo(f"cached            {'hit' if state.cached else 'miss'} (expires {state.expires_at})")


@credits_app.command("show")
def credits_show(
    user_id: Annotated[str, typer.Argument(help="Application user id.")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Show a user's credit balance."""
    with open_client(database_url, env) as client:
        balance = client.credit_balance(user_id)
    if as_json:
        print_json({"user_id": user_id, "balance": balance})
    else:
        typer.echo(f"{user_id}: {balance} credits")


@credits_app.command("history")
def credits_history(
    user_id: Annotated[str, typer.Argument(help="Application user id.")],
    limit: Annotated[int, typer.Option(help="How many entries, newest first.", min=1)] = 20,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Show a user's ledger entries (credit_transactions), newest first."""
    with open_client(database_url, env) as client:
        entries = client.credit_history(user_id, limit)
    if as_json:
        print_json([dataclasses.asdict(e) for e in entries])
        return
    if not entries:
        typer.echo(f"{user_id}: no ledger entries")
        return
    typer.echo(f"{'id':>6}  {'when (UTC)':<19}  {'type':<10} {'amount':>7} {'balance':>7}  description")
    for e in entries:
        when = e.created_at.strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{e.id:>6}  {when:<19}  {e.transaction_type:<10} {e.amount:>+7} {e.balance_after:>7}  "
                   f"{e.description or ''}")


@credits_app.command("grant", context_settings={"ignore_unknown_options": True})
def credits_grant(
    user_id: Annotated[str, typer.Argument(help="Application user id.")],
    amount: Annotated[int, typer.Argument(help="Credits to add (negative to remove; never below zero).",
                                          min=-INT_MAX, max=INT_MAX)],
    reason: Annotated[str, typer.Option("--reason", help="Why (stored as the entry's description).")],
    idempotency_key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key: repeating the command with it grants once.")
    ] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Grant (or remove) credits manually: an 'adjustment' ledger entry (grant_credits)."""
    with open_client(database_url, env) as client:
        result = client.grant_credits(user_id, amount, reason, idempotency_key)
    if as_json:
        print_json(result)
    elif result.success:
        again = " (already granted with this key)" if result.replayed else ""
        typer.echo(f"{user_id}: {amount:+} credits, balance {result.balance}{again}")
    else:
        typer.echo(f"refused: {result.code}: {result.message} (balance {result.balance})", err=True)
    if not result.success:
        raise typer.Exit(1)


@plans_app.command("list")
def plans_list(as_json: AsJson = False, database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """List the plans."""
    with open_client(database_url, env) as client:
        plans = client.list_plans()
    if as_json:
        print_json([p.raw for p in plans])
        return
    if not plans:
        typer.echo("no plans yet: add one with `billingdb plans set PRICE_ID --name NAME --credits N`")
        return
    typer.echo(f"{'price':<28} {'name':<14} {'credits':>7}  {'price':>9}  {'period':<7} {'unused credits':<15} "
               f"{'upgrade grants':<15} active")
    for p in plans:
        amount = format_amount(p.amount_cents, p.currency)
        policy = "expire" if p.reset_each_period else "roll over"
        typer.echo(f"{p.price_id:<28} {p.name:<14} {p.credits_per_period:>7}  {amount:>9}  "
                   f"{p.billing_interval or '-':<7} {policy:<15} {p.change_credits:<15} {'yes' if p.active else 'no'}")


@plans_app.command("set")
def plans_set(
    price_id: Annotated[str, typer.Argument(help="Stripe price id (price_...).")],
    name: Annotated[str, typer.Option("--name", help="Plan name, e.g. Individual.")],
    credits: Annotated[int, typer.Option("--credits", help="Credits allocated per paid period.", min=1, max=INT_MAX)],
    reset_each_period: Annotated[
        bool, typer.Option("--reset-each-period/--rollover", help="Unused credits expire at renewal (or roll over).")
    ] = False,
    amount_cents: Annotated[int | None, typer.Option(help="Price in the currency's smallest unit, as Stripe's unit_amount: cents for usd (999 is 9.99), yen for jpy.", min=0, max=INT_MAX)] = None,
    currency: Annotated[str | None, typer.Option(help="ISO currency, e.g. usd.")] = None,
    interval: Annotated[str | None, typer.Option(help="day, week, month or year.")] = None,
    active: Annotated[bool, typer.Option("--active/--inactive", help="Offered for new checkouts.")] = True,
    on_upgrade: Annotated[str | None, typer.Option(
        "--on-upgrade", metavar="POLICY",
        help="What a mid-period upgrade to this plan grants: difference (the credits between the plans; the "
             "default), full (this plan's credits) or none. A downgrade grants nothing until the next renewal.",
        show_default=False)] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Create or update the plan of a Stripe price (set_plan)."""
    with open_client(database_url, env) as client:
        plan = client.set_plan(price_id, name, credits, reset_each_period=reset_each_period,
                               amount_cents=amount_cents, currency=currency, billing_interval=interval,
                               active=active, change_credits=on_upgrade)
    if as_json:
        print_json(plan)
    else:
        verb = "created" if plan.created else "updated"
        typer.echo(f"{verb} plan {plan.price_id}: {plan.name}, {plan.credits_per_period} credits per "
                   f"{plan.billing_interval or 'period'}")


@plans_app.command("sync")
def plans_sync(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the changes; write nothing.")] = False,
    api_key: ApiKey = None,
    api_base: ApiBase = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Define plans in Stripe once: active recurring prices whose price or product metadata carries
    `credits` become plans (name from the product; amount, currency and interval from the price).

    Optional metadata `reset_each_period` (true, false) and `change_credits` (difference, full, none)
    set those policies; otherwise a plan keeps its own. A plan whose price or product Stripe no longer
    offers becomes inactive, never deleted; plans of prices without `credits` are left as they are.
    Every price is fetched before anything is written; the changes are one transaction, and a second
    run changes nothing. A price billed every N periods (recurring.interval_count above 1) is skipped
    with that reason: a plan stores one interval and no count. Exit 0 done; 1 when a price was skipped
    (bad metadata or an interval_count; the rest are applied); 2 for no or a refused API key, Stripe or
    the database unreachable, or a malformed answer.
    """
    config = stripe_config(api_key, api_base)
    with open_client(database_url, env) as client:
        try:
            sync = stripe_plans.sync_plans(client, config.client(), dry_run=dry_run)
        except stripe.StripeError as exc:
            stripe_failed(exc)
            raise  # unreachable: stripe_failed exits
        except stripe_api.MalformedAnswer as exc:
            fail(f"{exc}; nothing was written")
            raise
    if as_json:
        print_json({
            "dry_run": dry_run, "prices": sync.prices, "counts": sync.counts(),
            "changes": [{"action": c.action, "price_id": c.plan.price_id, "name": c.plan.name,
                         "credits_per_period": c.plan.credits_per_period,
                         "fields": {k: list(v) for k, v in c.fields.items()}} for c in sync.changes],
            "skipped": [dataclasses.asdict(s) for s in sync.skipped],
        })
    else:
        _print_plan_sync(sync)
    raise typer.Exit(1 if sync.skipped else 0)


def _print_plan_sync(sync: stripe_plans.PlanSync) -> None:
    rows = [(c.plan.price_id, c.plan.name, str(c.plan.credits_per_period), c.action, _described(c))
            for c in sync.changes]
    rows += [(s.price_id, s.name or "-", "-", "skip", s.reason) for s in sync.skipped]
    if rows:
        typer.echo(f"{'price':<30} {'plan':<14} {'credits':>7}  {'action':<10}  changes")
        for price_id, name, credits, action, what in rows:
            typer.echo(f"{price_id:<30} {name:<14} {credits:>7}  {action:<10}  {what}")
    n = sync.counts()
    verbs = ("to create", "to update", "to deactivate") if sync.dry_run else ("created", "updated", "deactivated")
    summary = (f"{sync.prices} Stripe prices: {n['create']} {verbs[0]}, {n['update']} {verbs[1]}, "
               f"{n['deactivate']} {verbs[2]}, {n['unchanged']} unchanged, {n['skipped']} skipped")
    typer.echo(summary + ("; dry run, nothing written" if sync.dry_run else ""))


def _described(change: stripe_plans.Change) -> str:
    """What a change does, for the table: the new plan's terms, or each field's old -> new."""
    p = change.plan
    if change.action == "create":
        amount = format_amount(p.amount_cents, p.currency) if p.amount_cents is not None else p.currency
        return f"new: {amount} per {p.billing_interval}"
    if change.action == "deactivate":
        return "no longer active in Stripe"
    return ", ".join(f"{name} {_shown(old)} -> {_shown(new)}" for name, (old, new) in change.fields.items())


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


@cache_app.command("status")
def cache_status(as_json: AsJson = False, database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Cache health (get_subscription_cache_status)."""
    with open_client(database_url, env) as client:
        status = client.get_subscription_cache_status()
    if as_json:
        print_json(status)
        return
    rate = f"{status.hit_rate:.1%}" if status.hit_rate is not None else "no reads yet"
    age = f"{status.average_age_seconds:.0f} s" if status.average_age_seconds is not None else "-"
    typer.echo(f"rows      {status.total} ({status.valid} valid, {status.expired} expired)")
    typer.echo(f"hit rate  {rate} ({status.hits} hits, {status.misses} misses since {status.stats_since})")
    typer.echo(f"avg age   {age}, ttl {status.ttl_seconds} s")
    last = status.last_cleanup
    typer.echo("cleanup   " + (f"last run {last['seconds_ago']:.0f} s ago, deleted {last['rows_deleted']} rows"
                               if last else "never run")
               + (f"; pg_cron job {status.cleanup_job['jobid']} (last run: {status.cleanup_job['last_status'] or '-'})"
                  if status.cleanup_job else "; not scheduled in pg_cron"))


@cache_app.command("clear")
def cache_clear(
    expired_only: Annotated[bool, typer.Option("--expired", help="Only delete expired rows.")] = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Delete every cache row (and reset the hit counters), or only expired ones; reads rebuild it."""
    with open_client(database_url, env) as client:
        if expired_only:
            typer.echo(f"deleted {client.clear_expired_subscription_cache()} expired cache rows")
        else:
            typer.echo(f"deleted {client.clear_all_subscription_cache()} cache rows; hit counters reset")


@cache_app.command("cleanup")
def cache_cleanup(as_json: AsJson = False, database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Delete expired cache rows now and record the run (pg_cron job subscription_cache_cleanup does it every minute)."""
    with open_client(database_url, env) as client:
        deleted = client.clear_expired_subscription_cache()
        run = client.get_cache_cleanup_history(1)[0]
    if as_json:
        print_json(run)
    else:
        typer.echo(f"deleted {deleted} expired cache rows in {run.duration_ms:.3f} ms")


@cache_app.command("history")
def cache_history(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs, newest first.", min=1)] = 10,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """The last cache cleanup runs (get_cache_cleanup_history): when, rows deleted, duration."""
    with open_client(database_url, env) as client:
        runs = client.get_cache_cleanup_history(limit)
    if as_json:
        print_json([dataclasses.asdict(r) for r in runs])
        return
    if not runs:
        typer.echo("no cache cleanup has run yet (billingdb cache cleanup, or pg_cron job subscription_cache_cleanup)")
        return
    typer.echo(f"{'started (UTC)':<23}  {'deleted':>7}  {'duration':>11}")
    for r in runs:
        when = f"{r.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"[:23]
        typer.echo(f"{when}  {r.rows_deleted:>7}  {r.duration_ms:>8.3f} ms")


@settings_app.command("list")
def settings_list(as_json: AsJson = False, database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Every tunable, its value and what it means."""
    with open_client(database_url, env) as client:
        rows = client.billing_settings()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        typer.echo(f"{row['name']:<36} {row['value']:<28} {row['description'] or ''}")


@settings_app.command("set", context_settings={"ignore_unknown_options": True})
def settings_set(
    name: Annotated[str, typer.Argument(help="The setting, e.g. cache_ttl_seconds (see `billingdb settings list`).")],
    value: Annotated[str, typer.Argument(help="Its new value.")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Change one tunable (set_billing_setting: checked, logged in the activity log)."""
    with open_client(database_url, env) as client:
        result = client.set_billing_setting(name, value)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['name']}: {result['previous']} -> {result['value']}")
