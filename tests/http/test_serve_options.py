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
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_body_below_one_is_refused(tmp_path: Path, value: str) -> None:
    """Was a traceback (ValueError: tolerance and max_body must be positive), exit 1."""
    result = _serve("--max-body", value, "--database-url", DOWN_URL, cwd=tmp_path)
    _refused(result, "--max-body", "1")
