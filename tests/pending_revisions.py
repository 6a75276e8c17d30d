"""Revision 0005 (credit holds) waits for revision 0004 (cron, maintenance), which is not committed yet.

Its migration lives in migrations/pending/ until 0004 is in migrations/versions;
the tests of what it creates are skipped until then (see that file's docstring
for the steps that activate it).
"""

from __future__ import annotations

import pytest

from billingdb.paths import MIGRATIONS_DIR

__all__ = ["HAS_0005", "requires_0005"]

HAS_0005 = any(MIGRATIONS_DIR.glob("versions/0005_*.py"))

requires_0005 = pytest.mark.skipif(
    not HAS_0005,
    reason="revision 0005 (credit holds) is not in migrations/versions yet: it waits for revision 0004",
)
