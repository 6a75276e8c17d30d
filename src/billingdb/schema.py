"""The head-schema snapshot (drift check) and throwaway databases.

``snapshot`` renders every billingdb object as sorted text lines; the test
suite compares a freshly migrated database with the committed
``tests/migrations/head_schema.txt``, and ``billingdb db snapshot --write``
regenerates that file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict

from billingdb import db

__all__ = ["snapshot", "render", "temporary_database", "database_url"]


def snapshot(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str]]:
    """(kind, name, detail) for every billingdb object, sorted."""
    return [(r["kind"], r["name"], r["detail"]) for r in db.run(conn, "schema_snapshot")]


def render(rows: list[tuple[str, str, str]]) -> str:
    """Readable, diff-friendly text: a header line per object, its definition indented."""
    out: list[str] = []
    for kind, name, detail in rows:
        out.append(f"{kind} {name}")
        out.extend("    " + line.rstrip() for line in (detail or "").strip().splitlines())
    return "\n".join(out) + "\n"


def database_url(server_url: str, dbname: str) -> str:
    """``server_url`` pointed at another database on the same server."""
    params = {k: str(v) for k, v in conninfo_to_dict(server_url).items() if v is not None}
    params["dbname"] = dbname
    user = quote(params.pop("user", ""), safe="")
    password = quote(params.pop("password", ""), safe="")
    host = params.pop("host", "")
    port = params.pop("port", "")
    name = quote(params.pop("dbname"), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        params["host"] = host
        host = ""
    netloc = auth + host + (f":{port}" if port else "")
    query = urlencode(params)
    return f"postgresql://{netloc}/{name}" + (f"?{query}" if query else "")


@contextmanager
def temporary_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """Create an empty (or cloned) database on the server of ``server_url``; drop it afterwards."""
    name = f"billingdb_tmp_{uuid.uuid4().hex[:12]}"
    with db.connect(server_url) as admin:
        db.run_statement(admin, "create_database_statement", {"name": name, "template": template})
    try:
        yield database_url(server_url, name)
    finally:
        with db.connect(server_url) as admin:
            db.run_statement(admin, "drop_database_statement", {"name": name})
