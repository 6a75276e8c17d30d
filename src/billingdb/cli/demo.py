"""``make demo``: the main job on the embedded database.

Starts the embedded PostgreSQL (or uses the chosen database), migrates it to
head and shows the revision and what it created. Then it starts ``billingdb
serve`` on a free local port and plays the seed's four test scenarios as signed
Stripe webhooks over HTTP (new subscription, monthly renewal, credit usage with
a refund on failure, cancellation with credits usable until the period ends),
printing the subscription state and the ledger after each.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from alembic import command

from billingdb import config, db
from billingdb.cli.options import DatabaseUrl, EnvName, choose
from billingdb.migrate import alembic_config
from billingdb.testing import child as child_service

__all__ = ["run", "demo_command"]


def _title(text: str) -> None:
    typer.secho(f"\n== {text}", bold=True)


def run(choice: config.DatabaseChoice) -> None:
    _title(f"database: {choice.source}")
    with db.connect(choice.url) as conn:
        typer.echo(db.query(conn, "server_version"))

    _title("billingdb db upgrade head")
    command.upgrade(alembic_config(url=choice.url), "head")

    from billingdb.cli.db import current_revision, list_objects

    _title("billingdb db current")
    typer.echo(current_revision(choice))
    _title("billingdb db objects")
    typer.echo("\n".join(list_objects(choice)))

    play_seed_scenarios(choice)


# -- the seed's four scenarios over the real webhook path ------------------------

DEMO_PLANS = (("price_individual_test", "Individual", 30, 999), ("price_team_test", "Team", 200, 2999),
              ("price_custom_test", "Custom", 500, 4999))


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 10) -> tuple[int, dict[str, Any]]:
    """One request with the standard library (the demo needs no HTTP client package)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


@contextmanager
def _service(url: str, secret: str) -> Iterator[str]:
    """``billingdb serve`` in a child process on a free port; yields its base URL once /healthz answers."""
    with child_service.serve({"STRIPE_WEBHOOK_SECRET": secret}, args=("--database-url", url)) as served:
        base = f"http://127.0.0.1:{served.port}"
        typer.echo(f"billingdb serve is listening on {base} (pid {served.pid})")
        yield base


def _send(base: str, event: dict[str, Any], secret: str) -> None:
    from billingdb.testing.stripe import encode, sign

    body = encode(event)
    code, answer = _http("POST", base + "/stripe/webhook", body,
                         {"content-type": "application/json", "stripe-signature": sign(body, secret)})
    detail = answer.get("detail") or {}
    note = detail.get("reason") or detail.get("action") or detail.get("error") or ""
    if (detail.get("allocation") or {}).get("duplicate"):
        note = "credits: this invoice was already allocated"
    typer.echo(f"  POST {event['type']:<30} {event['id']:<36} -> {code} {answer.get('status', answer)}"
               f"{'  (' + note + ')' if note else ''}")


def _show(client: Any, user_id: str) -> None:
    state = client.get_user_subscription_state(user_id)
    typer.echo(f"  state: status={state.status} plan={state.plan} credits={state.credits_balance} "
               f"can_use_credits={state.can_use_credits} cancel_at_period_end={state.cancel_at_period_end} "
               f"period_end={state.current_period_end}")
    typer.echo("  ledger:")
    for entry in reversed(client.credit_history(user_id, limit=20)):
        reason = entry.metadata.get("billing_reason") or ""
        typer.echo(f"    #{entry.id:<4} {entry.transaction_type:<11} {entry.amount:>+5}  balance {entry.balance_after:>4}"
                   f"  {entry.description or ''}{'  [' + reason + ']' if reason else ''}")


def play_seed_scenarios(choice: config.DatabaseChoice) -> None:
    """The seed's Phase 5 test scenarios through ``billingdb serve``, signed as Stripe signs them."""
    from billingdb.client import BillingClient
    from billingdb.testing.stripe import BASIL, StripeWorld

    secret = "whsec_demo_" + uuid.uuid4().hex
    world = StripeWorld(api_version=BASIL, user_id=f"user_demo_{uuid.uuid4().hex[:8]}")
    _title("webhooks: the seed's four test scenarios as signed HTTP requests")
    with BillingClient.connect(choice.url) as client, _service(choice.url, secret) as base:
        for price, name, credits, cents in DEMO_PLANS:
            client.set_plan(price, name, credits, amount_cents=cents, currency="usd", billing_interval="month")
        typer.echo("plans: " + ", ".join(f"{name} {credits} credits ({price})" for price, name, credits, _ in DEMO_PLANS))

        _title(f"1. new subscription: {world.user_id} completes Checkout (checkout.session.completed arrives last)")
        for event in world.new_subscription():
            _send(base, event, secret)
        _show(client, world.user_id)

        _title("2. monthly renewal: the next invoice is paid (invoice.paid and payment_succeeded allocate once)")
        for event in world.renewal():
            _send(base, event, secret)
        _show(client, world.user_id)

        _title("3. credit usage: a story costs 10 credits; its generation fails and they are refunded")
        use = client.use_credits_validated(world.user_id, 10, "Generate story with image")
        typer.echo(f"  use_credits_validated -> success={use.success} balance={use.balance}")
        if use.transaction_id is not None:
            refund = client.refund_credits(use.transaction_id, "generation failed")
            typer.echo(f"  refund_credits -> success={refund.success} balance={refund.balance}")
        _show(client, world.user_id)

        _title("4. cancellation: canceled in Stripe; the credits stay usable until the period ends")
        for event in world.cancel_now():
            _send(base, event, secret)
        _show(client, world.user_id)
        use = client.use_credits_validated(world.user_id, 1, "A story after cancellation")
        typer.echo(f"  use_credits_validated after cancellation -> success={use.success} balance={use.balance}")


def demo_command(database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Migrate the (embedded) database to head and show what billingdb created."""
    run(choose(database_url, env))
