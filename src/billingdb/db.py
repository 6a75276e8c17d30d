"""Connections and named queries.

Python never carries SQL text: every statement it sends is a named query from
``sql/queries/*.sql`` (a ``-- name: NAME`` line, a comment, a body), most of
them one call of a SQL function.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import psycopg
from psycopg.rows import dict_row

from billingdb.errors import DatabaseUnavailable, first_line, translate
from billingdb.paths import SQL_DIR

__all__ = ["connect", "query", "run", "queries", "execute_file", "run_statement"]

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """All named queries from ``sql/queries/*.sql``."""
    found: dict[str, str] = {}
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        parts = _NAME.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise ValueError(f"query {name} is defined twice ({path})")
            found[name] = body.strip()
    return found


@contextmanager
def connect(url: str, *, autocommit: bool = True,
            connect_timeout: int = 10) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A psycopg connection with dict rows; connection failures become DatabaseUnavailable."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, row_factory=dict_row, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {first_line(exc)}") from None
    except psycopg.ProgrammingError as exc:
        raise DatabaseUnavailable(f"invalid database URL: {exc}") from None
    with conn:
        yield conn


def run(conn: psycopg.Connection[Any], name: str, params: Any = None) -> list[dict[str, Any]]:
    """Execute the named query; SQL errors are translated to billingdb exceptions."""
    try:
        cur = conn.execute(queries()[name], params)
        return list(cur.fetchall()) if cur.description else []
    except psycopg.Error as exc:
        raise translate(exc) from exc


def query(conn: psycopg.Connection[Any], name: str, params: Any = None) -> Any:
    """The single value of the first row of the named query (None when no row)."""
    rows = run(conn, name, params)
    if not rows:
        return None
    row = rows[0]
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def execute_file(conn: psycopg.Connection[Any], sql: str) -> None:
    """Execute the text of a ``.sql`` file (several statements, no parameters); errors translated."""
    try:
        conn.execute(sql.encode())  # bytes: sent as is, with the simple query protocol
    except psycopg.Error as exc:
        raise translate(exc) from exc


def run_statement(conn: psycopg.Connection[Any], name: str, params: Any = None) -> None:
    """Execute the statement a named query builds (``statement``): for DDL that takes no parameters,
    such as CREATE DATABASE, whose names PostgreSQL itself quotes with format('%I')."""
    statement = query(conn, name, params)
    if not isinstance(statement, str):
        raise ValueError(f"query {name} built no statement")
    execute_file(conn, statement)
