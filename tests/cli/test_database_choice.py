"""Choosing the database: precedence, billingdb.toml environments, one-line errors, prod confirmation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from billingdb.config import choose_database
from billingdb.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
BAD_URL = "postgresql://nobody@127.0.0.1:1/nowhere"


def _billingdb(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""):  # type: ignore[no-untyped-def]
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "billingdb", *args],
        cwd=cwd, env=full_env, input=stdin, capture_output=True, text=True, timeout=120,
    )


def _alembic(*args: str, env: dict[str, str]):  # type: ignore[no-untyped-def]
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120,
    )


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "billingdb.toml").write_text(
        '[environments]\nnonprod = "NONPROD_URL"\nprod = "postgresql://prod.example/db"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NONPROD_URL", "postgresql://nonprod.example/db")
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env.example/db")
    # An explicit flag beats DATABASE_URL, and says so.
    flag = choose_database("postgresql://flag.example/db", "prod")
    assert flag.url == "postgresql://flag.example/db" and "DATABASE_URL" in (flag.note or "")
    prod = choose_database(None, "prod")
    assert prod.url == "postgresql://prod.example/db" and prod.is_prod
    assert prod.note == 'using environment "prod" in billingdb.toml; DATABASE_URL is set to another database ' \
        "and is ignored"
    # DATABASE_URL beats the configuration file's default.
    (tmp_path / "billingdb.toml").write_text(
        'default_environment = "nonprod"\n[environments]\nnonprod = "NONPROD_URL"\n'
    )
    env = choose_database(None, None)
    assert env.url == "postgresql://from-env.example/db" and env.source == "DATABASE_URL" and env.note is None
    monkeypatch.delenv("DATABASE_URL")
    assert choose_database(None, None).url == "postgresql://nonprod.example/db"
    assert choose_database(None, "nonprod").url == "postgresql://nonprod.example/db"


def test_env_prod_beats_database_url_and_asks(tmp_path: Path, empty_database_url: str) -> None:
    """Finding 4: with DATABASE_URL exported, --env prod migrated DATABASE_URL and skipped the confirmation."""
    (tmp_path / "billingdb.toml").write_text('[environments]\nprod = "PROD_DATABASE_URL"\n')
    env = {"PROD_DATABASE_URL": empty_database_url, "DATABASE_URL": BAD_URL}
    refused = _billingdb("db", "upgrade", "--env", "prod", cwd=tmp_path, env=env, stdin="n\n")
    lines = refused.stderr.splitlines()
    assert lines[0] == 'note: using environment "prod" ($PROD_DATABASE_URL); DATABASE_URL is set to another ' \
        "database and is ignored", refused.stderr
    assert "Continue?" in refused.stderr and refused.returncode == 1
    assert not _version_table_exists(empty_database_url)


@pytest.mark.parametrize(
    ("toml", "env", "fragment"),
    [
        (None, "prod", 'no environment "prod"'),
        ('[environments]\nnonprod = "X"\n', "prod", 'no environment "prod" in billingdb.toml'),
        ('[environments]\nprod = "UNSET_VARIABLE_FOR_TEST"\n', "prod", "UNSET_VARIABLE_FOR_TEST"),
        ("not toml [", "prod", "not valid TOML"),
    ],
)
def test_configuration_errors_name_what_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str | None, env: str, fragment: str
) -> None:
    if toml is not None:
        (tmp_path / "billingdb.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError) as info:
        choose_database(None, env)
    assert fragment in str(info.value)


def test_unknown_environment_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "billingdb.toml").write_text('[environments]\nnonprod = "postgresql://x/y"\n')
    result = _billingdb("db", "current", "--env", "prod", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert 'no environment "prod" in billingdb.toml' in result.stderr


def test_bad_database_url_is_one_line_exit_2(tmp_path: Path) -> None:
    result = _billingdb("db", "upgrade", cwd=tmp_path, env={"DATABASE_URL": BAD_URL})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: cannot connect to the database")
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr


def test_alembic_with_bad_database_url_is_one_line_exit_2() -> None:
    result = _alembic("upgrade", "head", env={"DATABASE_URL": BAD_URL})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.startswith("INFO")]
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to the database")


def _version_table_exists(url: str) -> bool:
    with psycopg.connect(url) as c:
        return c.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()[0]


def test_prod_asks_before_doing_anything(tmp_path: Path, empty_database_url: str) -> None:
    (tmp_path / "billingdb.toml").write_text('[environments]\nprod = "PROD_DATABASE_URL"\n')
    env = {"PROD_DATABASE_URL": empty_database_url}
    refused = _billingdb("db", "upgrade", "--env", "prod", cwd=tmp_path, env=env, stdin="n\n")
    assert refused.returncode == 1
    assert "Continue?" in refused.stderr and "nothing was changed" in refused.stderr
    assert not _version_table_exists(empty_database_url)
    no_input = _billingdb("db", "upgrade", "--env", "prod", cwd=tmp_path, env=env)
    assert no_input.returncode != 0
    assert not _version_table_exists(empty_database_url)
    done = _billingdb("db", "upgrade", "--env", "prod", "--yes", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    current = _billingdb("db", "current", "--env", "prod", cwd=tmp_path, env=env)
    assert "at head" in current.stdout


@pytest.mark.parametrize(("flag", "variable", "source"), [
    ("not-a-url", None, "--database-url"),
    (None, "not-a-url", "DATABASE_URL"),
    (None, "postgresql://host/db?nosuchoption=1", "DATABASE_URL"),
])
def test_a_url_psycopg_cannot_read_is_refused_naming_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch, flag: str | None, variable: str | None, source: str
) -> None:
    if variable is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", variable)
    with pytest.raises(ConfigurationError) as info:
        choose_database(flag, None)
    assert str(info.value).startswith(f"the database URL from {source} cannot be read:"), str(info.value)


def test_a_url_psycopg_cannot_read_is_one_line_exit_2(tmp_path: Path) -> None:
    result = _billingdb("db", "current", "--database-url", "not-a-url", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith('error: the database URL from --database-url cannot be read: missing "="'), \
        result.stderr
