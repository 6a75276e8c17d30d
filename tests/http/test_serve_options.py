"""``billingdb serve``'s options: bad values are refused before anything starts (exit 2, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from billingdb.testing.stripe import SECRET

#: Well-formed, but nothing listens there: serve may start on it (the pool retries), so each bad
#: option below must be refused before the database matters.
DOWN_URL = "postgresql://nobody@127.0.0.1:1/nowhere"


def _serve(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30):  # type: ignore[no-untyped-def]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BILLINGDB_"))}
    full_env.update({"STRIPE_WEBHOOK_SECRET": SECRET, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "billingdb", "serve", "--host", "127.0.0.1", "--port", "1", *args],
        cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def _refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_body_below_one_is_refused(tmp_path: Path, value: str) -> None:
    """Was a traceback (ValueError: tolerance and max_body must be positive), exit 1."""
    result = _serve("--max-body", value, "--database-url", DOWN_URL, cwd=tmp_path)
    _refused(result, "--max-body", "1")


@pytest.mark.parametrize("args", [("--workers", "0"), ("--pool-size", "0"), ("--graceful-timeout", "0"),
                                  ("--no-such-option",)])
def test_every_usage_error_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    _refused(_serve(*args, "--database-url", DOWN_URL, cwd=tmp_path), args[0])


def test_unknown_log_level_is_refused_and_the_levels_are_listed(tmp_path: Path) -> None:
    """Was a traceback (KeyError: 'bogus') from uvicorn's logging set-up, exit 1."""
    _refused(_serve("--log-level", "bogus", "--database-url", DOWN_URL, cwd=tmp_path), "--log-level", "bogus")
    help_text = " ".join(_serve("--help", cwd=tmp_path).stdout.split())
    assert "critical|error|warning|info|debug|trace" in help_text, help_text


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from billingdb import service
    from billingdb.cli import app

    given: dict[str, object] = {}
    monkeypatch.setattr(service, "serve", lambda settings, **options: given.update(options))
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    result = CliRunner().invoke(app, ["serve", "--workers", "1", "--log-level", "WARNING", "--database-url", DOWN_URL])
    assert result.exit_code == 0, result.output
    assert given["log_level"] == "warning"


def test_a_database_url_psycopg_cannot_read_is_refused_at_start(tmp_path: Path) -> None:
    """Was accepted: the server ran, logging `missing "=" after "not-a-url"` for every connection attempt."""
    result = _serve("--database-url", "not-a-url", cwd=tmp_path, timeout=30)
    _refused(result, "--database-url", 'missing "=" after "not-a-url"')
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: "), result.stderr
