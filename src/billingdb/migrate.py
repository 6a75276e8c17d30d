"""Alembic glue: the Config for a database, and how revisions run SQL files.

A revision is a thin Python file that names the ``.sql`` files it applies
(``apply_sql``); each file is pinned to that revision and never edited later
(guide section 3). Every revision starts by setting ``lock_timeout`` and
``statement_timeout`` for its own transaction.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import context, op
from alembic.config import Config

from billingdb.paths import ALEMBIC_INI, MIGRATIONS_DIR, SQL_DIR

__all__ = ["alembic_config", "apply_sql", "read_sql"]

SETTINGS_FILE = "revisions/settings.sql"

# A revision's RAISE NOTICE (e.g. 0004: "pg_cron is not installed ...") is shown
# with Alembic's own progress lines, as psql would show it for the offline script.
_log = logging.getLogger("alembic.runtime.migration")


def _log_notice(diag: Any) -> None:
    _log.info("%s: %s", diag.severity, diag.message_primary)


def alembic_config(url: str | None = None, env: str | None = None) -> Config:
    """An Alembic Config for billingdb; ``url`` (if given) overrides every other choice."""
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.attributes["database_url"] = url
    if env:
        cfg.cmd_opts = None
        cfg.attributes["env_name"] = env
    return cfg


def read_sql(relative: str) -> str:
    path = SQL_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {path} named by a revision does not exist")
    return path.read_text()


def _execute(sql: str) -> None:
    if context.is_offline_mode():
        import sqlalchemy as sa

        # Offline: emitted as text. A backslash-escaped colon renders as ':'.
        # Alembic adds the terminating ';' itself.
        op.execute(sa.text(sql.rstrip().removesuffix(";").replace(":", "\\:")))
    else:
        # Online: the raw driver string on Alembic's connection, in its transaction.
        # psycopg sends a parameterless string with the simple protocol, so a file
        # may hold several statements and $$ bodies verbatim.
        dbapi = op.get_bind().connection.dbapi_connection
        assert dbapi is not None
        dbapi.add_notice_handler(_log_notice)  # type: ignore[attr-defined]
        try:
            with dbapi.cursor() as cur:
                cur.execute(sql)  # type: ignore[arg-type]
        finally:
            dbapi.remove_notice_handler(_log_notice)  # type: ignore[attr-defined]


def apply_sql(*relatives: str) -> None:
    """Apply the revision's settings, then each named SQL file in order."""
    _execute(read_sql(SETTINGS_FILE))
    for relative in relatives:
        _execute(read_sql(relative))


def revision_files() -> list[Path]:
    return sorted((MIGRATIONS_DIR / "versions").glob("*.py"))
