"""Alembic environment for billingdb.

The database is chosen by billingdb.config.choose_database: an URL given by the
caller (billingdb CLI, tests), ``-x env=NAME`` from billingdb.toml,
DATABASE_URL, billingdb.toml's default_environment, or the embedded PostgreSQL.

A migration command is one transaction: it takes a transaction-level advisory
lock first (a second concurrent command waits, then finds nothing left to do),
applies every revision, and commits; a failure at any step (a refused
downgrade, a lock timeout, a lost connection) changes nothing. Errors are one
line on stderr and exit 2, never a traceback. ``-x allow_data_loss=true`` lets
a downgrade drop tables that hold rows (the revisions refuse otherwise, BD072).
"""

from __future__ import annotations

import sys
from logging.config import fileConfig

import psycopg
from alembic import context
from sqlalchemy import Engine, create_engine, pool
from sqlalchemy.exc import DBAPIError, OperationalError

from billingdb.config import choose_database, sqlalchemy_url
from billingdb.errors import BillingError
from billingdb.migrate import allow_data_loss_sql, migration_lock_sql, one_line_error

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _url() -> str:
    given = config.attributes.get("database_url")
    env = context.get_x_argument(as_dictionary=True).get("env") or config.attributes.get("env_name")
    try:
        choice = choose_database(given, env)
    except BillingError as exc:
        _fail(str(exc))
    if choice.note:
        print(f"note: {choice.note}", file=sys.stderr)
    return choice.url


def _allow_data_loss() -> bool:
    given = context.get_x_argument(as_dictionary=True).get("allow_data_loss", "")
    return bool(config.attributes.get("allow_data_loss")) or given.lower() in {"1", "true", "yes", "on"}


def _migrate() -> None:
    """Everything in one transaction: the lock, the data-loss setting, every revision."""
    with context.begin_transaction():
        context.execute(migration_lock_sql())
        if _allow_data_loss():
            context.execute(allow_data_loss_sql())
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit static SQL: no connection, no catalog queries."""
    context.configure(
        url="postgresql+psycopg://",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=False,
        output_buffer=config.output_buffer,
    )
    _migrate()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, transaction_per_migration=False)
    _migrate()


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
        _fail(f"cannot connect to the database: {lines[0] if lines else exc}")
    try:
        with connection:
            _run(connection)
    except DBAPIError as exc:
        _fail(one_line_error(exc.orig or exc, "nothing was changed"))
    except psycopg.Error as exc:  # raised by a revision's SQL file (billingdb.migrate.apply_sql)
        _fail(one_line_error(exc, "nothing was changed"))
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
