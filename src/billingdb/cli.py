"""The ``billingdb`` command line (Typer).

Every command that touches a database takes ``--database-url`` and ``--env``;
without them it uses DATABASE_URL, then the embedded PostgreSQL. Errors are one
line on stderr: exit 2 when the database cannot be chosen or reached, 1 for
other failures.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from billingdb import config, db, embedded
from billingdb.errors import BillingError, ConfigurationError, DatabaseUnavailable
from billingdb.billing_cli import cache_app, credits_app, plans_app, state_command
from billingdb.cli_options import DatabaseUrl, EnvName
from billingdb.events_cli import events_app, serve_command
from billingdb.operations_cli import health_command, maintenance_app, reconcile_command

__all__ = ["app", "main"]

app = typer.Typer(
    help="billingdb: Stripe subscriptions and prepaid credits inside PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(
    help="Migrate the database (Alembic) and inspect its schema.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(events_app, name="events")
app.command("serve")(serve_command)
app.command("state")(state_command)
app.add_typer(credits_app, name="credits")
app.add_typer(plans_app, name="plans")
app.add_typer(cache_app, name="cache")
app.command("health")(health_command)
app.command("reconcile")(reconcile_command)
app.add_typer(maintenance_app, name="maintenance")

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation on prod.")]


def _choose(database_url: str | None, env: str | None) -> config.DatabaseChoice:
    return config.choose_database(database_url, env)


def _alembic(choice: config.DatabaseChoice):  # type: ignore[no-untyped-def]
    from billingdb.migrate import alembic_config

    return alembic_config(url=choice.url)


def _check_connects(choice: config.DatabaseChoice) -> None:
    with db.connect(choice.url):
        pass


def _confirm(choice: config.DatabaseChoice, action: str, yes: bool) -> None:
    if choice.is_prod and not yes:
        typer.echo(f"About to {action} on {choice.source}.", err=True)
        if not typer.confirm("Continue?", default=False, err=True):
            typer.echo("aborted: nothing was changed", err=True)
            raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
    env: EnvName = None,
    yes: Yes = False,
) -> None:
    """Upgrade the database to REVISION (default: head)."""
    from alembic import command

    choice = _choose(database_url, env)
    _confirm(choice, f"upgrade to {revision}", yes)
    _check_connects(choice)
    command.upgrade(_alembic(choice), revision)
    typer.echo(f"upgraded {choice.source} to {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision: an id, -1, or base (removes everything).")],
    database_url: DatabaseUrl = None,
    env: EnvName = None,
    yes: Yes = False,
) -> None:
    """Downgrade the database to REVISION; `base` removes every billingdb object."""
    from alembic import command

    choice = _choose(database_url, env)
    _confirm(choice, f"downgrade to {revision}", yes)
    _check_connects(choice)
    command.downgrade(_alembic(choice), revision)
    typer.echo(f"downgraded {choice.source} to {revision}")


def current_revision(choice: config.DatabaseChoice) -> str:
    """One line: the database's revision and whether it is at head."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, pool

    _check_connects(choice)
    script = ScriptDirectory.from_config(_alembic(choice))
    heads = set(script.get_heads())
    engine = create_engine(config.sqlalchemy_url(choice.url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    label = ", ".join(sorted(current)) or "base (empty)"
    state = "at head" if current == heads else f"behind head ({', '.join(sorted(heads))})"
    return f"{choice.source}: {label} - {state}"


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Show the database's revision and whether it is at head."""
    typer.echo(current_revision(_choose(database_url, env)))


@db_app.command("history")
def db_history() -> None:
    """List the revisions, oldest first."""
    from alembic.script import ScriptDirectory

    from billingdb.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    for rev in reversed(list(script.walk_revisions())):
        doc = (rev.doc or "").strip().splitlines()[0] if rev.doc else ""
        typer.echo(f"{rev.revision}  {doc}")


@db_app.command("sql")
def db_sql(
    revision_range: Annotated[
        str, typer.Argument(help="head, a revision, or FROM:TO (e.g. 0001:head, or head:base for a downgrade).")
    ] = "head",
) -> None:
    """Print the SQL a migration would run, without a database (for review)."""
    from alembic import command

    from billingdb.migrate import alembic_config

    cfg = alembic_config()
    if ":" in revision_range:
        start, end = revision_range.split(":", 1)
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(cfg)
        order = [r.revision for r in reversed(list(script.walk_revisions()))]
        rank = {"base": -1, "head": len(order) - 1, **{r: i for i, r in enumerate(order)}}
        if rank.get(end, 0) < rank.get(start, 0):
            command.downgrade(cfg, revision_range, sql=True)
            return
    command.upgrade(cfg, revision_range, sql=True)


def list_objects(choice: config.DatabaseChoice) -> list[str]:
    """A line per table and function, with the first sentence of its comment."""
    with db.connect(choice.url) as conn:
        rows = db.run(conn, "list_objects")
    lines = []
    for row in rows:
        first = row["description"].split(". ")[0] if row["description"] else ""
        lines.append(f"{row['kind']:<9} {row['name']:<48} {first[:60]}")
    return lines


@db_app.command("objects")
def db_objects(database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """List the tables and functions in the database, with their comments."""
    for line in list_objects(_choose(database_url, env)):
        typer.echo(line)


@db_app.command("snapshot")
def db_snapshot(
    write: Annotated[Path | None, typer.Option(help="Write the snapshot to this file instead of stdout.")] = None,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Migrate a throwaway database on the chosen server to head and print its schema snapshot."""
    from alembic import command

    from billingdb import schema
    from billingdb.migrate import alembic_config

    choice = _choose(database_url, env)
    with schema.temporary_database(choice.url) as url:
        command.upgrade(alembic_config(url=url), "head")
        with db.connect(url) as conn:
            text = schema.render(schema.snapshot(conn))
    if write:
        write.write_text(text)
        typer.echo(f"wrote {write} ({text.count(chr(10))} lines)")
    else:
        typer.echo(text, nl=False)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL (if it is running)."""
    if embedded.stop():
        typer.echo(f"stopped the embedded PostgreSQL in {embedded.data_dir()}")
    else:
        typer.echo("the embedded PostgreSQL is not running")


@app.command("demo")
def demo_command(database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Migrate the (embedded) database to head and show what billingdb created."""
    from billingdb import demo

    demo.run(_choose(database_url, env))


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: one-line errors, exit 2 for configuration and connection problems."""
    try:
        return app(args=argv, standalone_mode=True)
    except (ConfigurationError, DatabaseUnavailable) as exc:
        _fail(str(exc), 2)
    except BillingError as exc:
        code = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        _fail(f"{exc}{code}", 1)
