"""Where billingdb's SQL files, migrations and alembic.ini live.

In a source checkout (the usual, editable install) they are at the repository
root; in a wheel they are packaged under ``billingdb/_data``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT", "SQL_DIR", "MIGRATIONS_DIR", "ALEMBIC_INI"]


def _root() -> Path:
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "alembic.ini").is_file() and (checkout / "sql").is_dir():
        return checkout
    return Path(__file__).resolve().parent / "_data"


ROOT = _root()
SQL_DIR = ROOT / "sql"
MIGRATIONS_DIR = ROOT / "migrations"
ALEMBIC_INI = ROOT / "alembic.ini"
