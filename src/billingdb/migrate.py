"""Alembic glue: the Config for a database, and how revisions run SQL files.

A revision is a thin Python file that names the ``.sql`` files it applies
(``apply_sql``); each file is pinned to that revision and never edited later
and never edited once released. Every revision starts by setting
``lock_timeout`` and ``statement_timeout``; a migration command runs as one
transaction (migrations/env.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from alembic import context, op
from alembic.config import Config

from billingdb.paths import ALEMBIC_INI, MIGRATIONS_DIR, SQL_DIR

__all__ = [
    "alembic_config", "apply_sql", "read_sql", "migration_lock_sql", "allow_data_loss_sql", "one_line_error",
    "DowngradeStep", "downgrade_plan",
]

SETTINGS_FILE = "revisions/settings.sql"

# A revision's RAISE NOTICE (e.g. 0004: "pg_cron is not installed ...") is shown
# with Alembic's own progress lines, as psql would show it for the offline script.
_log = logging.getLogger("alembic.runtime.migration")


def _log_notice(diag: Any) -> None:
    if diag.message_hint:
        _log.info("%s: %s\nHINT: %s", diag.severity, diag.message_primary, diag.message_hint)
    else:
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


def migration_lock_sql() -> str:
    """The advisory lock every migration command takes first (sql/revisions/lock.sql)."""
    return read_sql("revisions/lock.sql")


def allow_data_loss_sql() -> str:
    """The setting that lets a downgrade drop tables holding rows (sql/revisions/allow_data_loss.sql)."""
    return read_sql("revisions/allow_data_loss.sql")


def one_line_error(exc: Any, then: str = "") -> str:
    """A database error as one line: its message and SQLSTATE, ``then`` (e.g. "nothing was changed"), its hint."""
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    sqlstate = getattr(exc, "sqlstate", None)
    hint = getattr(diag, "message_hint", None)
    return (text + (f" (SQLSTATE {sqlstate})" if sqlstate else "") + (f"; {then}" if then else "")
            + (f"; hint: {hint}" if hint else ""))


@dataclass(frozen=True)
class DowngradeStep:
    """One revision a downgrade undoes: its id, title, refusal check and the tables it drops."""

    revision: str
    down_revision: str | None
    title: str
    guard: str | None
    drops_tables: tuple[str, ...]


def downgrade_plan(cfg: Config, current: str | None, target: str) -> list[DowngradeStep]:
    """The revisions a downgrade from ``current`` to ``target`` (an id, ``base`` or ``-N``) undoes, newest first."""
    from alembic.script import ScriptDirectory

    from billingdb.errors import ConfigurationError

    script = ScriptDirectory.from_config(cfg)
    relative = target.startswith("-") and target[1:].isdigit()
    if target not in ("base", "head") and not relative and script.get_revision(target) is None:
        raise ConfigurationError(f"unknown revision {target!r} (see billingdb db history)")
    steps: list[DowngradeStep] = []
    revision = script.get_revision(current) if current else None
    stop = None if target == "base" or relative else target
    while revision is not None and revision.revision != stop:
        if relative and len(steps) == int(target[1:]):
            break
        module = revision.module
        title = (revision.doc or "").strip().splitlines()[0] if revision.doc else ""
        down = revision.down_revision
        steps.append(DowngradeStep(revision.revision, down if isinstance(down, str) else None, title,
                                   getattr(module, "DOWNGRADE_GUARD", None),
                                   tuple(getattr(module, "DROPS_TABLES", ()))))
        revision = script.get_revision(down) if isinstance(down, str) else None
    if relative and len(steps) < int(target[1:]):
        raise ConfigurationError(f"cannot go {target} revisions down from {current or 'base'}")
    if stop is not None and revision is None and current is not None:
        raise ConfigurationError(f"revision {target} is not below the current revision {current}")
    return steps
