"""``billingdb db``: migrate the database (Alembic) and inspect its schema.

Upgrades and downgrades are one transaction each (migrations/env.py); a downgrade
prints its plan first and refuses to drop data unless told (--allow-data-loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer

from billingdb import config, db, embedded
from billingdb.cli.options import DatabaseUrl, EnvName, choose
from billingdb.errors import ConfigurationError

__all__ = ["db_app", "current_revision", "list_objects"]

db_app = typer.Typer(rich_markup_mode=None, 
    help="Migrate the database (Alembic) and inspect its schema.", no_args_is_help=True
)

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (prod, or a downgrade).")]
AllowDataLoss = Annotated[bool, typer.Option(
    "--allow-data-loss", help="Let the downgrade drop tables that hold rows (it refuses otherwise).")]


def _alembic(choice: config.DatabaseChoice, allow_data_loss: bool = False):  # type: ignore[no-untyped-def]
    from billingdb.migrate import alembic_config

    cfg = alembic_config(url=choice.url)
    cfg.attributes["allow_data_loss"] = allow_data_loss
    return cfg


def _check_connects(choice: config.DatabaseChoice) -> None:
    with db.connect(choice.url):
        pass


def _confirm(choice: config.DatabaseChoice, action: str, yes: bool, always: bool = False) -> None:
    """Ask before acting on prod (or, with ``always``, anywhere); --yes answers for the DBA."""
    if (choice.is_prod or always) and not yes:
        typer.echo(f"About to {action} on {choice.source}.", err=True)
        try:
            answer = typer.confirm("Continue?", default=False, err=True)
        except (click.exceptions.Abort, typer.Abort):  # no terminal, or end of input: the answer is no
            answer = False
            typer.echo("", err=True)
        if not answer:
            typer.echo("aborted: nothing was changed (answer y, or pass --yes)", err=True)
            raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
    env: EnvName = None,
    yes: Yes = False,
) -> None:
    """Upgrade the database to REVISION (default: head), in one transaction."""
    from alembic import command

    choice = choose(database_url, env)
    _confirm(choice, f"upgrade to {revision}", yes)
    _check_connects(choice)
    command.upgrade(_alembic(choice), revision)
    typer.echo(f"upgraded {choice.source} to {revision}")


def _current_heads(choice: config.DatabaseChoice) -> list[str]:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(config.sqlalchemy_url(choice.url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
def db_downgrade(
    revision: Annotated[str, typer.Argument(
        help="Target revision: an id, -1 (one revision down) or base (removes everything).")],
    database_url: DatabaseUrl = None,
    env: EnvName = None,
    allow_data_loss: AllowDataLoss = False,
    yes: Yes = False,
) -> None:
    """Downgrade the database to REVISION, in one transaction.

    Before anything runs it prints the plan: the revisions it undoes and the tables it drops
    with their row counts. It refuses (exit 2, nothing changed) while a table it would drop
    holds data, unless --allow-data-loss; then it asks for confirmation (or --yes).
    """
    from alembic import command

    from billingdb.migrate import downgrade_plan, read_sql

    choice = choose(database_url, env)
    _check_connects(choice)
    heads = _current_heads(choice)
    if len(heads) > 1:
        raise ConfigurationError(f"the database has several heads ({', '.join(heads)}): downgrade one explicitly")
    steps = downgrade_plan(_alembic(choice), heads[0] if heads else None, revision)
    if not steps:
        typer.echo(f"nothing to downgrade: {choice.source} is at {heads[0] if heads else 'base'}")
        return
    tables = [t for step in steps for t in step.drops_tables]
    with db.connect(choice.url) as conn:
        counts = {r["table_name"]: r["row_count"] for r in db.run(conn, "table_row_counts", {"tables": tables})}
    landing = steps[-1].down_revision or "base"
    target = landing if landing == revision else f"{landing} ({revision})"
    typer.echo(f"Downgrade plan for {choice.source}: {heads[0]} -> {target}", err=True)
    for step in steps:
        typer.echo(f"  undo {step.revision}  {step.title}", err=True)
    for table in tables:
        if table in counts:
            rows = counts[table]
            typer.echo(f"  drop {table:<45} {rows:>10} row{'' if rows == 1 else 's'}", err=True)

    # Every refusal check of the revisions, before anything is undone.
    with db.connect(choice.url) as conn:
        with conn.transaction(force_rollback=True):
            if allow_data_loss:
                conn.execute(read_sql("revisions/allow_data_loss.sql"))  # type: ignore[arg-type]
            for step in steps:
                if step.guard:
                    db.execute_file(conn, read_sql(step.guard))
    _confirm(choice, f"downgrade to {revision} (dropping the tables above)", yes, always=bool(tables))
    command.downgrade(_alembic(choice, allow_data_loss), revision)
    typer.echo(f"downgraded {choice.source} to {revision}")


@db_app.command("url")
def db_url(database_url: DatabaseUrl = None, env: EnvName = None) -> None:
    """Print the URL of the database a command would use (the embedded one is started): psql "$(billingdb db url)"."""
    typer.echo(choose(database_url, env).url)


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
    typer.echo(current_revision(choose(database_url, env)))


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
    for line in list_objects(choose(database_url, env)):
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

    choice = choose(database_url, env)
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
