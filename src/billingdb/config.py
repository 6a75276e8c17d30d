"""Choosing the database: one function shared by the CLI, Alembic and the tests.

Order of precedence (an explicit flag beats an environment variable, which
beats the configuration file, which beats the built-in default):

1. an explicit URL (``--database-url``),
2. a named environment given explicitly (``--env NAME`` / ``alembic -x
   env=NAME``), looked up in ``billingdb.toml``: its value is a URL, or the
   name of an environment variable that holds one,
3. the ``DATABASE_URL`` environment variable,
4. ``default_environment = "NAME"`` in ``billingdb.toml``,
5. the embedded PostgreSQL under ``.billingdb/`` (started on demand).

When an explicit flag wins over a different ``DATABASE_URL``, the choice's
``note`` says so; the CLI prints it as its first line.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from billingdb.errors import ConfigurationError

__all__ = ["DatabaseChoice", "choose_database", "config_path", "sqlalchemy_url"]

CONFIG_FILE = "billingdb.toml"


@dataclass(frozen=True)
class DatabaseChoice:
    """A database URL and a human description of where it came from."""

    url: str
    source: str
    env_name: str | None = None
    #: Set when an explicit flag overrides a different DATABASE_URL: what was used and what was ignored.
    note: str | None = None

    @property
    def is_prod(self) -> bool:
        return self.env_name is not None and self.env_name.lower() in {"prod", "production"}


def config_path() -> Path:
    """``$BILLINGDB_CONFIG`` or ``./billingdb.toml``."""
    return Path(os.environ.get("BILLINGDB_CONFIG", CONFIG_FILE))


def _read_config(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None


def _lookup_environment(name: str) -> DatabaseChoice:
    path = config_path()
    if not path.is_file():
        raise ConfigurationError(f'no environment "{name}": {path} does not exist')
    data = _read_config(path)
    environments = data.get("environments", {})
    if not isinstance(environments, dict):
        raise ConfigurationError(f"{path}: [environments] must be a table")
    if name not in environments:
        known = ", ".join(sorted(environments)) or "none"
        raise ConfigurationError(f'no environment "{name}" in {path} (known: {known})')
    value = environments[name]
    if isinstance(value, dict):
        value = value.get("url") or value.get("url_env")
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f'environment "{name}" in {path} must be a URL or a variable name')
    if "://" in value:
        return DatabaseChoice(value, f'environment "{name}" in {path}', name)
    url = os.environ.get(value)
    if not url:
        raise ConfigurationError(
            f'environment "{name}" in {path} names the variable {value}, which is not set'
        )
    return DatabaseChoice(url, f'environment "{name}" (${value})', name)


def choose_database(
    database_url: str | None = None,
    env: str | None = None,
    *,
    start_embedded: bool = True,
) -> DatabaseChoice:
    """Return the database to use, following the documented precedence.

    A URL psycopg cannot parse is refused here, naming where it came from (ConfigurationError), so
    that no command starts on it; a well-formed URL whose server is down is not checked here.
    """
    return _readable(_choose_database(database_url, env, start_embedded=start_embedded))


def _readable(choice: DatabaseChoice) -> DatabaseChoice:
    """The choice, if psycopg (libpq) can parse its URL."""
    from psycopg import conninfo

    try:
        conninfo.conninfo_to_dict(choice.url)
    except Exception as exc:  # psycopg.ProgrammingError; libpq's message names the fault, one line
        message = " ".join(str(exc).split())
        raise ConfigurationError(f"the database URL from {choice.source} cannot be read: {message}") from None
    return choice


def _choose_database(database_url: str | None, env: str | None, *, start_embedded: bool) -> DatabaseChoice:
    from_env = os.environ.get("DATABASE_URL") or None
    if database_url:
        return _noting(DatabaseChoice(database_url, "--database-url"), from_env)
    if env:
        return _noting(_lookup_environment(env), from_env)
    if from_env:
        return DatabaseChoice(from_env, "DATABASE_URL")
    path = config_path()
    if path.is_file():
        default = _read_config(path).get("default_environment")
        if default is not None:
            if not isinstance(default, str) or not default:
                raise ConfigurationError(f"{path}: default_environment must be an environment name")
            return _lookup_environment(default)
    from billingdb import embedded

    url = embedded.url(start=start_embedded)
    return DatabaseChoice(url, f"embedded PostgreSQL in {embedded.data_dir()}")


def _noting(choice: DatabaseChoice, from_env: str | None) -> DatabaseChoice:
    """The choice, with a note when DATABASE_URL is set to another database (and so ignored)."""
    if from_env is None or from_env == choice.url:
        return choice
    note = f"using {choice.source}; DATABASE_URL is set to another database and is ignored"
    return DatabaseChoice(choice.url, choice.source, choice.env_name, note)


def sqlalchemy_url(url: str) -> str:
    """The same URL with SQLAlchemy's psycopg 3 driver name."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ConfigurationError(f"not a PostgreSQL URL: {url!r}")
