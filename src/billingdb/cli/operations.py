"""``billingdb health | reconcile | maintenance ...``: the seed's runbook as commands.

- ``health [--json]``: the monitoring queries against the success metrics
  (``billing_health()``): exit 0 healthy, 1 when a threshold is breached (each
  breach named), 2 when the database cannot be chosen or reached;
- ``reconcile [--since 7d|DATE] [--json]``: the weekly check, per user allocated,
  used and balance, with every mismatch or negative balance named
  (``reconcile_credits()``), and every paid invoice that allocated no credits
  (named query ``unallocated_paid_invoices``): exit 1 on a finding;
- ``maintenance run``: what the pg_cron jobs do, once (for system cron or a
  Kubernetes CronJob): delete expired cache rows, purge old processed Stripe
  events in committed batches, trim pg_cron's run log;
- ``maintenance schedule | unschedule | status``: install, remove and show the
  pg_cron jobs (``schedule_billing_jobs()``, ...).

Every command is a call of a SQL function through
:class:`billingdb.client.BillingClient`; the checks live in SQL so that any
service can run them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from billingdb.cli.events import parse_since
from billingdb.cli.options import AsJson, DatabaseUrl, EnvName, open_client, print_json
from billingdb.client import BillingClient
from billingdb.errors import CronUnavailable

__all__ = ["health_command", "reconcile_command", "maintenance_app"]

maintenance_app = typer.Typer(rich_markup_mode=None, 
    help="Maintenance jobs: run them once, or schedule them in pg_cron.", no_args_is_help=True
)






def _number(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    text = f"{float(value):.2f}".rstrip("0").rstrip(".") if unit in {"%", "s"} else str(value)
    return f"{text} {unit}"


def health_command(as_json: AsJson = False, database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Run the runbook's monitoring checks; exit 1 when a success metric is breached (named), 2 if unreachable."""
    with open_client(database_url, env) as client:
        report = client.billing_health()
    if as_json:
        print_json(report)
    else:
        breaches = report["breaches"]
        typer.echo("healthy" if report["healthy"] else f"UNHEALTHY: {len(breaches)} breached: {', '.join(breaches)}")
        for check in report["checks"]:
            status = {"ok": "ok", "breach": "BREACH", "no_data": "no data", "pending": "pending"}[check["status"]]
            need = f"{check['comparison']} {_number(check['threshold'], check['unit'])}"
            typer.echo(f"  {status:<8} {check['name']:<25} {_number(check['value'], check['unit']):>10}  "
                       f"(need {need}): {check['detail']}")
        events, cache = report["events"], report["cache"]
        oldest = events["oldest_unprocessed_at"]
        typer.echo(f"events: {events['unprocessed']} not processed ({events['failed']} failed, {events['pending']} "
                   f"pending)" + (f", oldest received {oldest}" if oldest else ""))
        typer.echo(f"cache: {cache['total']} rows ({cache['valid']} valid, {cache['expired']} expired), "
                   f"ttl {cache['ttl_seconds']} s")
        for finding in report["ledger"]["findings"][:10]:
            typer.echo(f"ledger: {finding['user_id']}: {', '.join(finding['findings'])}")
    if not report["healthy"]:
        raise typer.Exit(1)


def reconcile_command(
    since: Annotated[
        str, typer.Option(help="Sums over entries since: 30m, 2h, 7d, 1w or an ISO date; 'all' for all time.")
    ] = "7d",
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """The weekly check: per user allocated / used / balance, paid invoices without credits; exit 1 on a finding."""
    cutoff = None if since.strip().lower() == "all" else parse_since(since)
    with open_client(database_url, env) as client:
        rows = client.reconcile_credits(cutoff)
        unallocated = client.unallocated_paid_invoices(cutoff)
    findings = [r for r in rows if r["findings"]]
    if as_json:
        print_json({"since": cutoff, "users": rows, "findings": len(findings) + len(unallocated),
                     "unallocated_invoices": unallocated})
    else:
        label = f"since {cutoff:%Y-%m-%d %H:%M:%S %Z}" if cutoff else "over all time"
        typer.echo(f"credits {label}: {len(rows)} users listed, {len(findings)} with a balance finding")
        if rows:
            typer.echo(f"{'user':<24} {'allocated':>9} {'used':>7} {'refunded':>8} {'adjusted':>8} {'expired':>7} "
                       f"{'balance':>7} {'ledger':>7}  findings")
        for r in rows:
            balance = "-" if r["balance"] is None else r["balance"]
            typer.echo(f"{r['user_id']:<24} {r['allocated']:>9} {r['used']:>7} {r['refunded']:>8} {r['adjusted']:>8} "
                       f"{r['expired']:>7} {balance:>7} {r['ledger_balance']:>7}  {', '.join(r['findings'])}")
        if findings:
            typer.echo(f"FINDINGS: {len(findings)} users: "
                       + "; ".join(f"{r['user_id']} {', '.join(r['findings'])}" for r in findings))
        else:
            typer.echo("no finding: every balance equals the sum of its ledger and none is negative")
        for inv in unallocated:
            typer.echo(f"UNALLOCATED: invoice {inv['invoice_id']} of {inv['user_id'] or inv['customer_id'] or '?'} "
                       f"paid (events {inv['statuses']}) but no credits allocated"
                       + (f": {inv['error']}" if inv["error"] else ""))
        if not unallocated:
            typer.echo("every paid invoice received allocated its credits")
    if findings or unallocated:
        raise typer.Exit(1)


@maintenance_app.command("run")
def maintenance_run(
    retention_days: Annotated[
        int | None,
        typer.Option(min=30, help="Purge done Stripe events older than this (default: setting, 90 days)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100000, help="Events deleted per transaction.")] = 1000,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Run every maintenance job once (what pg_cron would): cache cleanup, events purge, cron log trim,
    expired credit holds released."""
    older_than = timedelta(days=retention_days) if retention_days is not None else None
    started = datetime.now(UTC)
    with open_client(database_url, env) as client:
        deleted = client.clear_expired_subscription_cache()
        run = client.get_cache_cleanup_history(1)[0]
        purged = client.purge_stripe_events(older_than, batch_size)
        trimmed = client.trim_cron_job_run_details()
        released = client.release_expired_credit_holds()
    if as_json:
        print_json({
            "started_at": started,
            "cache_rows_deleted": deleted,
            "cache_cleanup_ms": run.duration_ms,
            "stripe_events_deleted": purged.deleted,
            "stripe_events_batches": purged.batches,
            "cron_runs_deleted": trimmed,
            "credit_holds_released": released,
        })
        return
    typer.echo(f"cache cleanup: deleted {deleted} expired cache rows in {run.duration_ms:.3f} ms")
    retention = f"{retention_days} days" if retention_days is not None else "the retention (stripe_events_retention_days)"
    typer.echo(f"stripe_events purge: deleted {purged.deleted} processed events older than {retention} "
               f"in {purged.batches} batches")
    if trimmed is None:
        typer.echo("cron.job_run_details trim: skipped, pg_cron is not installed in this database")
    else:
        typer.echo(f"cron.job_run_details trim: deleted {trimmed} runs older than the retention "
                   "(cron_history_retention_days)")
    typer.echo(f"credit holds: released {released} expired holds (their credits are back in the balance)")


def _cron_jobs_changed(database_url: str | None, env: str | None,
                       change: Callable[[BillingClient], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """(Un)schedule the pg_cron jobs; without pg_cron or its USAGE: the error and its hint, exit 1."""
    try:
        with open_client(database_url, env) as client:
            return change(client)
    except CronUnavailable as exc:
        typer.echo(f"error: {exc} [{exc.sqlstate}]", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        raise typer.Exit(1) from None


@maintenance_app.command("schedule")
def maintenance_schedule(database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Schedule (or update) billingdb's jobs in pg_cron, which must be installed in this database."""
    for job in _cron_jobs_changed(database_url, env, BillingClient.schedule_billing_jobs):
        typer.echo(f"scheduled {job['job_name']:<28} job {job['jobid']:<4} {job['schedule']:<12} {job['command']}")


@maintenance_app.command("unschedule")
def maintenance_unschedule(database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Remove billingdb's jobs from pg_cron (their run history stays)."""
    jobs = _cron_jobs_changed(database_url, env, BillingClient.unschedule_billing_jobs)
    if not jobs:
        typer.echo("no billingdb job was scheduled")
    for job in jobs:
        typer.echo(f"unscheduled {job['job_name']} (job {job['jobid']})")


@maintenance_app.command("status")
def maintenance_status(as_json: AsJson = False, database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """billingdb's pg_cron jobs: scheduled or not, and their last run."""
    with open_client(database_url, env) as client:
        jobs = client.billing_cron_jobs()
    if as_json:
        print_json(jobs)
        return
    for job in jobs:
        if job["jobid"] is None:
            state = "not scheduled"
        else:
            last = (f"last run {job['last_status']} at {job['last_start']:%Y-%m-%d %H:%M:%S}"
                    if job["last_start"] else "not run yet")
            state = f"job {job['jobid']}, {'active' if job['active'] else 'inactive'}, {last}"
        typer.echo(f"{job['job_name']:<28} {job['schedule']:<12} {state}")
        typer.echo(f"{'':<28} {job['description']}")
