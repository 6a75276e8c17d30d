"""Alembic environment for billingdb.

The database is chosen by billingdb.config.choose_database: an URL given by the
caller (billingdb CLI, tests), DATABASE_URL, ``-x env=NAME`` from
billingdb.toml, or the embedded PostgreSQL. Each revision runs in its own
transaction.
"""

from __future__ import annotations

import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Engine, create_engine, pool
from sqlalchemy.exc import OperationalError

from billingdb.config import choose_database, sqlalchemy_url
from billingdb.errors import BillingError

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    given = config.attributes.get("database_url")
    env = context.get_x_argument(as_dictionary=True).get("env") or config.attributes.get("env_name")
    try:
        return choose_database(given, env).url
    except BillingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_migrations_offline() -> None:
    """Emit static SQL: no connection, no catalog queries."""
    context.configure(
        url="postgresql+psycopg://",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
        output_buffer=config.output_buffer,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Engine):  # pytest-alembic hands over an engine
        with given.connect() as connection:
            _run(connection)
        return
    if given is not None:  # a caller's open connection
        _run(given)
        return
    url = _url()
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        connection = engine.connect()
    except OperationalError as exc:
        lines = str(exc.orig or exc).strip().splitlines()
        print(f"error: cannot connect to the database: {lines[0] if lines else exc}", file=sys.stderr)
        sys.exit(2)
    try:
        with connection:
            _run(connection)
    finally:
        engine.dispose()

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
