"""``billingdb customers``: who is which Stripe customer, and the customers still waiting for a link.

A customer is linked to a user by Checkout, by the ``user_id`` in a customer's, a subscription's or an
invoice's metadata (the key is the setting ``user_id_metadata_key``), or by hand here; the link applies
the customer's pending events at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from billingdb import db
from billingdb.cli.options import (
    AsJson,
    DatabaseUrl,
    EnvName,
    choose,
    open_client,
    print_json,
)

__all__ = ["customers_app"]

customers_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                            help="Customers: the user <-> Stripe customer links, and customers waiting for one.")


@customers_app.command("link")
def customers_link(
    user_id: Annotated[str, typer.Argument(help="The application user id.")],
    customer_id: Annotated[str, typer.Argument(help="The Stripe customer id (cus_...).")],
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Link a user to a Stripe customer (link_stripe_customer); the customer's pending events apply at once."""
    with open_client(database_url, env) as client:
        link = client.link_stripe_customer(user_id, customer_id)
    typer.echo(f"linked {link.user_id} to {link.stripe_customer_id}")


@customers_app.command("show")
def customers_show(
    key: Annotated[str, typer.Argument(help="A user id or a Stripe customer id.")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Show a user's (or a customer's) link, subscriptions and events not done yet."""
    with db.connect(choose(database_url, env).url) as conn:
        rows = db.run(conn, "customer_by_user_or_id", {"key": key})
    if not rows:
        typer.echo(f"no customer or user {key}", err=True)
        raise typer.Exit(1)
    if as_json:
        print_json(rows[0])
        return
    row = rows[0]
    typer.echo(f"user              {row['user_id']}")
    typer.echo(f"stripe customer   {row['stripe_customer_id'] or '- (not linked)'}")
    typer.echo(f"email             {row['email'] or '-'}")
    typer.echo(f"subscriptions     {', '.join(row['subscriptions']) or '-'}")
    typer.echo(f"events not done   {row['events_not_done']}")


@customers_app.command("list")
def customers_list(
    unlinked: Annotated[bool, typer.Option("--unlinked", help="Customers whose events wait for a link.")] = False,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """List the Stripe customers with pending events (no user linked yet): link them with `customers link`."""
    if not unlinked:
        raise typer.BadParameter("only --unlinked is supported: the customers whose events wait for a link")
    with db.connect(choose(database_url, env).url) as conn:
        rows = db.run(conn, "unlinked_customers")
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no customer is waiting for a link")
        return
    typer.echo(f"{'customer':<32} {'pending':>7}  {'first event (UTC)':<19}  types")
    for r in rows:
        first = f"{r['first_event']:%Y-%m-%d %H:%M:%S}" if r["first_event"] else "-"
        typer.echo(f"{r['customer_id'] or '-':<32} {r['pending_events']:>7}  {first:<19}  {r['event_types']}")
    raise typer.Exit(1)  # a finding, for alerts
