"""The ``billingdb`` command line (Typer).

Every command that touches a database takes ``--database-url`` and ``--env``
(flags beat DATABASE_URL, which beats billingdb.toml's default_environment,
which beats the embedded PostgreSQL). Errors are one line on stderr: exit 2
when the database cannot be chosen or reached, a migration or downgrade is
refused or fails, 1 for other failures.

One module per command group: ``db`` (migrations), ``billing`` (state, credits,
plans, cache), ``events``, ``operations`` (health, reconcile, maintenance),
``stripe`` (recovery from Stripe's API), ``serve`` and ``demo``; ``options`` holds what they share.
"""

from __future__ import annotations

import sys
from typing import Any

import psycopg
import typer
from sqlalchemy.exc import DBAPIError

from billingdb.cli.billing import (
    cache_app,
    credits_app,
    plans_app,
    settings_app,
    state_command,
)
from billingdb.cli.customers import customers_app
from billingdb.cli.db import db_app
from billingdb.cli.demo import demo_command
from billingdb.cli.events import events_app
from billingdb.cli.operations import health_command, maintenance_app, reconcile_command
from billingdb.cli.serve import ServeCommand, serve_command
from billingdb.cli.stripe import stripe_app
from billingdb.errors import (
    BillingError,
    ConfigurationError,
    DatabaseUnavailable,
    DowngradeRefused,
)
from billingdb.migrate import one_line_error

__all__ = ["app", "main"]

app = typer.Typer(
    rich_markup_mode=None,
    help="billingdb: Stripe subscriptions and prepaid credits inside PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db_app, name="db")
app.add_typer(events_app, name="events")
app.command("serve", cls=ServeCommand)(serve_command)
app.command("state")(state_command)
app.add_typer(credits_app, name="credits")
app.add_typer(plans_app, name="plans")
app.add_typer(cache_app, name="cache")
app.add_typer(settings_app, name="settings")
app.add_typer(customers_app, name="customers")
app.add_typer(stripe_app, name="stripe")
app.command("health")(health_command)
app.command("reconcile")(reconcile_command)
app.add_typer(maintenance_app, name="maintenance")
app.command("demo")(demo_command)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: one-line errors, exit 2 for configuration and connection problems."""
    try:
        return app(args=argv, standalone_mode=True)
    except (ConfigurationError, DatabaseUnavailable) as exc:
        _fail(str(exc), 2)
    except DowngradeRefused as exc:
        hint = f"; hint: {exc.hint}" if getattr(exc, "hint", None) else ""
        _fail(f"{exc} (SQLSTATE {exc.sqlstate}); nothing was changed{hint}", 2)
    except BillingError as exc:
        code = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        hint = f"; hint: {exc.hint}" if getattr(exc, "hint", None) else ""
        _fail(f"{exc}{code}{hint}", 1)
    except psycopg.Error as exc:
        _fail(one_line_error(exc), 2)
    except DBAPIError as exc:
        _fail(one_line_error(exc.orig or exc), 2)
