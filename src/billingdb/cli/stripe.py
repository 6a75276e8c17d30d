"""``billingdb stripe ...``: recovery from Stripe's API when webhooks were missed.

- ``stripe sync-events``: Stripe's Events API through process_stripe_event, from a cursor;
- ``stripe sync subscriptions``: Stripe's subscriptions compared with billingdb's state, repaired with
  ``--apply`` (core: :mod:`billingdb.stripe_subscriptions`).

Every command takes ``--api-key`` (default ``$STRIPE_SECRET_KEY``; a restricted key with read access
is enough) and ``--api-base`` (default ``$BILLINGDB_STRIPE_API_BASE``, else Stripe's API). Exit codes:
0 done, 1 when an event failed or drift is left, 2 for bad input, a missing or refused key, a
malformed answer, or Stripe unreachable.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import stripe
import typer

from billingdb import db, event_sync, stripe_api, stripe_subscriptions
from billingdb.cli.events import parse_since
from billingdb.cli.options import AsJson, DatabaseUrl, EnvName, choose, print_json, value_option
from billingdb.errors import InvalidArgument

__all__ = ["stripe_app", "sync_app", "ApiKey", "ApiBase", "stripe_config", "stripe_failed", "fail"]

stripe_app = typer.Typer(
    rich_markup_mode=None, no_args_is_help=True,
    help="Recovery from Stripe's API: missed events backfilled, drift found and repaired.",
)
sync_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                       help="Compare billingdb with Stripe's API, and repair with --apply.")
stripe_app.add_typer(sync_app, name="sync")

ApiKey = Annotated[str | None, value_option(
    "--api-key", "KEY", "Stripe secret or restricted key (read access). Default: $STRIPE_SECRET_KEY.")]
ApiBase = Annotated[str | None, value_option(
    "--api-base", "URL", "Stripe's API address (a stand-in or localstripe). Default: $BILLINGDB_STRIPE_API_BASE, "
                         "else https://api.stripe.com.")]

#: Network errors and 429s are retried by the stripe library, with its backoff.
MAX_NETWORK_RETRIES = 5


def fail(message: str) -> None:
    """One line on stderr, exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def stripe_config(api_key: str | None, api_base: str | None) -> stripe_api.StripeConfig:
    """The flags, else the environment; exit 2 with one line when there is no key."""
    config = stripe_api.StripeConfig.from_env(api_key=api_key, api_base=api_base,
                                              max_network_retries=MAX_NETWORK_RETRIES)
    if config is None:
        fail("no Stripe API key: pass --api-key or set STRIPE_SECRET_KEY")
    assert config is not None
    return config


def stripe_failed(exc: stripe.StripeError) -> None:
    """A Stripe failure as one line, exit 2."""
    fail(stripe_api.describe_error(exc))


def _progress(label: str) -> Any:
    """A stderr line that counts, with rate (and ETA once the total is known); silent off a terminal."""
    return _Progress(label) if sys.stderr.isatty() else None


class _Progress:
    def __init__(self, label: str) -> None:
        self.label, self.total, self.done, self.t0 = label, 0, 0, time.monotonic()

    def start(self, label: str, total: int) -> None:
        sys.stderr.write("\n")
        self.label, self.total, self.done, self.t0 = label, total, 0, time.monotonic()

    def count(self, n: int) -> None:
        self.done = n
        self._show()

    def add(self, n: int) -> None:
        self.done += n
        self._show()

    def _show(self) -> None:
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        rate = self.done / elapsed
        line = f"\r{self.label}: {self.done}"
        if self.total:
            eta = (self.total - self.done) / rate if rate else 0
            line += f"/{self.total}  {rate:,.0f}/s  ETA {eta:,.0f}s"
        else:
            line += f"  {rate:,.0f}/s"
        sys.stderr.write(line)
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


@stripe_app.command("sync-events")
def sync_events_command(
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN", show_default=False,
        help="Start at this age (30m, 12h, 3d) or ISO date/time (UTC when no offset); at most 30 days back "
             "(Stripe keeps events 30 days). Default: the cursor (the newest event synced), else 3 days.")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, metavar="N", show_default=False,
        help="Apply at most this many events (the oldest fetched); the next run continues from the cursor. "
             "The table's events and new columns (and --json's by_type, new_by_type) still count every "
             "event fetched; the outcomes count the events applied.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Fetch and count by type, and how many are new; apply and record nothing.")] = False,
    api_key: ApiKey = None,
    api_base: ApiBase = None,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
    as_json: AsJson = False,
) -> None:
    """Recover missed webhooks: Stripe's Events API (the handled types, oldest first) through
    process_stripe_events, the webhook's path, many events per transaction.

    An event already received is a duplicate and changes nothing, so running it again is safe. The
    cursor (the newest event synced) moves with each committed batch: a run that stops half-way
    continues from it. One sync at a time: a second one says so (with --json, {"skipped": true, "reason": ...})
    and exits 0. Exit 0 when every
    event ended processed, duplicate, ignored, stale or pending; 1 when one failed or was invalid;
    2 for bad input, no or a refused API key, Stripe or the database unreachable.
    """
    now = datetime.now(UTC)  # read once: --since 30d is exactly Stripe's 30 days, not a moment more
    start = None
    if since is not None:
        try:
            start = parse_since(since, now)
            assert start is not None
            event_sync.check_since(start, now)
        except (typer.BadParameter, ValueError) as exc:
            fail(str(exc))
    config = stripe_config(api_key, api_base)
    progress = _progress("fetching events from Stripe")
    with db.connect(choose(database_url, env).url) as conn:
        try:
            report = event_sync.sync_events(
                conn, config.client(), since=start, limit=limit, dry_run=dry_run, now=now,
                on_fetch=progress.count if progress else None,
                on_start=(lambda n: progress.start("applying", n)) if progress else None,
                on_batch=progress.add if progress else None,
            )
        except event_sync.SyncBusy as exc:
            if as_json:
                print_json({"skipped": True, "reason": str(exc), "dry_run": dry_run})
            else:
                typer.echo(str(exc), err=True)
            raise typer.Exit(0) from None
        except stripe.StripeError as exc:
            stripe_failed(exc)
            raise  # unreachable: stripe_failed exits
        except stripe_api.MalformedAnswer as exc:
            fail(str(exc))
        finally:
            if progress:
                progress.close()
    if as_json:
        print_json({"since": report.since.isoformat(), "dry_run": dry_run, **report.counts(),
                    "new_by_type": dict(report.new_by_type), "skipped_types": dict(report.skipped_types),
                    "sync": report.cursor})
    else:
        _print_sync(report, dry_run)
    bad = report.outcomes["failed"] + report.outcomes["invalid"]
    raise typer.Exit(1 if bad else 0)


def _print_sync(report: event_sync.SyncReport, dry_run: bool) -> None:
    if report.cursor_too_old:
        typer.echo("note: the last sync is older than Stripe's 30 days of events; events before "
                   f"{report.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC cannot be recovered from Stripe", err=True)
    skipped = sum(report.skipped_types.values())
    other = f" ({skipped} of other types skipped)" if skipped else ""
    typer.echo(f"Stripe events since {report.since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: {report.fetched} to sync{other}")
    if report.by_type:
        typer.echo(f"{'type':<36} {'events':>7} {'new':>7}")
        for kind in sorted(report.by_type):
            typer.echo(f"{kind:<36} {report.by_type[kind]:>7} {report.new_by_type[kind]:>7}")
    if dry_run:
        typer.echo(f"dry run: {sum(report.new_by_type.values())} new, nothing applied")
        if report.remaining:
            applied = report.fetched - report.remaining
            typer.echo(f"--limit would apply the {applied} oldest and leave {report.remaining} for the next run")
        return
    parts = ", ".join(f"{n} {status}" for status, n in sorted(report.outcomes.items(), key=lambda kv: -kv[1]))
    typer.echo(f"{sum(report.outcomes.values())} events: {parts or 'nothing to do'}")
    for result in report.results:
        if result.get("status") in ("failed", "invalid"):
            detail = result.get("detail") or {}
            typer.echo(f"  {result.get('event_id')}: {result.get('status')} "
                       f"[{detail.get('sqlstate')}] {detail.get('error')}", err=True)
    if report.remaining:
        typer.echo(f"{report.remaining} more to apply: run again (--limit stopped this run)")
    cursor = report.cursor
    if cursor.get("cursor_event_id"):
        typer.echo(f"cursor: {cursor['cursor_event_id']} ({cursor['cursor_created']})")


@sync_app.command("subscriptions")
def sync_subscriptions_command(
    customer: Annotated[str | None, typer.Option(
        "--customer", metavar="CUS", show_default=False,
        help="Only this Stripe customer's subscriptions (cus_...). Default: every subscription.")] = None,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Repair: write Stripe's state through the state machine's writer (logged as a sync) and "
                        "allocate the paid invoices found without an allocation, once.")] = False,
    api_key: ApiKey = None,
    api_base: ApiBase = None,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
    as_json: AsJson = False,
) -> None:
    """Compare Stripe's subscriptions (any status) with billingdb's: status, price, period, cancellation,
    customer and user; print the drift as a table, and the latest paid invoices without an allocation.

    Without --apply nothing is written. With --apply each drifted subscription is written through
    apply_subscription_change with the listing's time as its event time (a subscription that received
    an event as new is left alone; an older event arriving later is stale), and each paid invoice
    found is allocated once through the webhook's allocation path. A subscription unknown to billingdb
    that ended in Stripe is ignored. Exit 0 when nothing is left to repair, 1 when drift is left (found
    without --apply, or not repairable: run again or see the reason), 2 for bad input, no or a refused
    API key, a malformed answer from Stripe, Stripe or the database unreachable; nothing is written then.
    """
    if customer is not None and (not customer.startswith("cus_") or len(customer) <= 4
                                 or any(c.isspace() for c in customer)):
        fail(f"--customer must be a Stripe customer id (cus_...), not {customer!r}")
    config = stripe_config(api_key, api_base)
    progress = _progress("listing Stripe's subscriptions")
    with db.connect(choose(database_url, env).url) as conn:
        try:
            report = stripe_subscriptions.sync_subscriptions(
                conn, config.client(), customer=customer, apply=apply,
                on_page=progress.count if progress else None,
            )
        except stripe.StripeError as exc:
            stripe_failed(exc)
            raise  # unreachable: stripe_failed exits
        except stripe_api.MalformedAnswer as exc:
            fail(f"{exc}; nothing was written")
            raise  # unreachable: fail exits
        except InvalidArgument as exc:
            fail(f"Stripe sent a malformed object: {exc} [22023]; nothing was written")
            raise  # unreachable: fail exits
        finally:
            if progress:
                progress.close()
    if as_json:
        print_json(report.as_json())
    else:
        _print_subscription_sync(report)
    raise typer.Exit(1 if report.remaining else 0)


#: The order the drift's fields are shown in.
_FIELDS = ("status", "price_id", "current_period_start", "current_period_end", "cancel_at_period_end",
           "canceled_at", "customer_id", "user_id")


def _shown(value: Any) -> str:
    """A drift value for the table: times in UTC to the second, null as -."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        try:
            return f"{datetime.fromisoformat(value).astimezone(UTC):%Y-%m-%d %H:%M:%S}"
        except ValueError:
            pass
    return str(value)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _print_subscription_sync(report: stripe_subscriptions.SubscriptionSync) -> None:
    counts = report.counts()
    whose = f" of {report.customer}" if report.customer else ""
    ignored = f", {counts['ignored']} ended and unknown here (ignored)" if counts["ignored"] else ""
    typer.echo(f"Stripe subscriptions{whose} at {report.observed_at:%Y-%m-%d %H:%M:%S} UTC: {counts['listed']} listed, "
               f"{counts['in_sync']} in sync, {counts['drift']} with drift{ignored}")
    if report.drift:
        rows: list[tuple[str, ...]] = []
        for sub in report.drift:
            fields = sub["fields"]
            names = [f for f in _FIELDS if f in fields] or ["-"]
            for n, name in enumerate(names):
                ours, theirs = fields.get(name, [None, None])
                first = n == 0
                rows.append((sub["subscription_id"] if first else "", (sub["user_id"] or "-") if first else "",
                             name, _shown(ours), _shown(theirs), sub["result"] if first else ""))
        _table(("subscription", "user", "field", "billingdb", "stripe", "result"), rows)
        for sub in report.drift:
            if sub.get("reason"):
                typer.echo(f"  {sub['subscription_id']}: {sub['result']}: {sub['reason']}")
    if report.invoices:
        typer.echo(f"Paid invoices without an allocation: {len(report.invoices)}")
        rows = []
        for inv in report.invoices:
            paid = stripe_api.format_amount(inv.get("amount_paid"), inv.get("currency"))
            allocation = inv.get("allocation") or {}
            result = inv["result"]
            if inv["applied"] and allocation:
                result = f"allocated {allocation.get('credits')} credits"
            rows.append((inv["invoice_id"], inv["subscription_id"] or "-", inv["user_id"] or "-",
                         _shown(inv.get("paid_at")), paid, inv.get("billing_reason") or "-", result))
        _table(("invoice", "subscription", "user", "paid at", "amount", "billing reason", "result"), rows)
        for inv in report.invoices:
            if inv.get("reason") and inv["result"] in ("not_linked", "failed"):
                typer.echo(f"  {inv['invoice_id']}: {inv['result']}: {inv['reason']}")
    left = report.remaining
    if not report.drift and not report.invoices:
        typer.echo("no drift: billingdb agrees with Stripe")
    elif not report.apply:
        typer.echo("nothing written (run with --apply to repair)")
    else:
        subs, invoices = counts["applied"], counts["invoices_allocated"]
        typer.echo(f"applied: {subs} subscription{'' if subs == 1 else 's'}, {invoices} invoice"
                   f"{'' if invoices == 1 else 's'}; "
                   + (f"{left} left to repair (see above), run again" if left else "nothing left to repair"))
