"""What every ``billingdb`` command shares: the database options, choosing the database, a client, JSON output."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from billingdb import config
from billingdb.client import BillingClient

__all__ = ["DatabaseUrl", "EnvName", "AsJson", "choose", "open_client", "print_json", "value_option"]


def value_option(flag: str, metavar: str, help: str) -> Any:
    """An option that takes a value and whose default is looked up elsewhere (its help says where)."""
    return typer.Option(flag, metavar=metavar, show_default=False, help=help)


DatabaseUrl = Annotated[str | None, value_option(
    "--database-url", "URL", "PostgreSQL URL; overrides --env, DATABASE_URL and billingdb.toml.")]
EnvName = Annotated[str | None, value_option(
    "--env", "NAME", "Environment name looked up in billingdb.toml (e.g. nonprod, prod); overrides DATABASE_URL.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def choose(database_url: str | None, env: str | None) -> config.DatabaseChoice:
    """The database a command uses; when a flag overrides a different DATABASE_URL, say so first (stderr)."""
    choice = config.choose_database(database_url, env)
    if choice.note:
        typer.echo(f"note: {choice.note}", err=True)
    return choice


@contextmanager
def open_client(database_url: str | None, env: str | None) -> Iterator[BillingClient]:
    """A BillingClient on the chosen database."""
    with BillingClient.connect(choose(database_url, env).url) as billing:
        yield billing


def print_json(value: Any) -> None:
    """A result as indented JSON (a client dataclass as its raw result or its fields)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = getattr(value, "raw", None) or dataclasses.asdict(value)
    typer.echo(json.dumps(value, indent=2, default=str, sort_keys=True))
