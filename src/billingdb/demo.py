"""``make demo``: the main job on the embedded database.

Starts the embedded PostgreSQL (or uses the chosen database), migrates it to
head and shows the revision and what it created.
"""

from __future__ import annotations

import typer
from alembic import command

from billingdb import config, db
from billingdb.migrate import alembic_config

__all__ = ["run"]


def _title(text: str) -> None:
    typer.secho(f"\n== {text}", bold=True)


def run(choice: config.DatabaseChoice) -> None:
    _title(f"database: {choice.source}")
    with db.connect(choice.url) as conn:
        typer.echo(db.query(conn, "server_version"))

    _title("billingdb db upgrade head")
    command.upgrade(alembic_config(url=choice.url), "head")

    from billingdb.cli import current_revision, list_objects

    _title("billingdb db current")
    typer.echo(current_revision(choice))
    _title("billingdb db objects")
    typer.echo("\n".join(list_objects(choice)))
