"""Named queries from ``bench/sql/*.sql`` (the project's ``-- name: NAME`` format).

SQL lives in .sql files (CONTRIBUTING): the harness only names the query it
runs and passes psycopg parameters (``%(users)s``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import psycopg

from bench.errors import BenchError

__all__ = ["SQL_DIR", "SCRIPTS_DIR", "queries", "run", "value"]

SQL_DIR = Path(__file__).resolve().parent / "sql"
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        parts = _NAME.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise ValueError(f"bench query {name} is defined twice ({path})")
            found[name] = body.strip()
    return found


def run(conn: psycopg.Connection[Any], name: str, params: Any = None) -> list[dict[str, Any]]:
    """Execute a named bench query; a database error becomes a BenchError naming the query."""
    try:
        cur = conn.execute(queries()[name], params)
        return list(cur.fetchall()) if cur.description else []
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"bench query {name} failed: {first}") from exc


def value(conn: psycopg.Connection[Any], name: str, params: Any = None) -> Any:
    """The single value of the first row of a named bench query."""
    rows = run(conn, name, params)
    return next(iter(rows[0].values())) if rows else None
