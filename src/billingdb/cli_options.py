"""Options shared by every ``billingdb`` command that talks to a database."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["DatabaseUrl", "EnvName", "AsJson"]

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL URL; overrides DATABASE_URL and --env.", show_default=False),
]
EnvName = Annotated[
    str | None,
    typer.Option("--env", help="Environment name looked up in billingdb.toml (e.g. nonprod, prod).",
                 show_default=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
