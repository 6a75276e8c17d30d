"""Drift check: a freshly migrated database equals the committed head-schema snapshot.

Regenerate the snapshot with `make snapshot` and review its diff.
"""

from __future__ import annotations

from pathlib import Path

from billingdb import schema

SNAPSHOT = Path(__file__).with_name("head_schema.txt")


def test_head_schema_matches_committed_snapshot(conn) -> None:  # type: ignore[no-untyped-def]
    actual = schema.render(schema.snapshot(conn))
    expected = SNAPSHOT.read_text()
    assert actual == expected, "schema drift: run `make snapshot` and review the diff of " + str(SNAPSHOT)
