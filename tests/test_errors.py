"""Every SQLSTATE raised in sql/ is registered in billingdb.errors with its own exception class."""

from __future__ import annotations

import re

import psycopg
import pytest

from billingdb import errors
from billingdb.paths import SQL_DIR

RAISED = sorted({
    code
    for path in SQL_DIR.rglob("*.sql")
    for code in re.findall(r"ERRCODE\s*=\s*'([0-9A-Z]{5})'", path.read_text())
})


def test_some_codes_are_raised() -> None:
    assert "22023" in RAISED


@pytest.mark.parametrize("code", RAISED)
def test_raised_code_is_registered(code: str) -> None:
    assert code in errors.SQLSTATES, f"SQLSTATE {code} is raised in sql/ but not listed in errors.SQLSTATES"


def test_each_code_has_its_own_class_in_reserved_class() -> None:
    classes = [cls for cls, _ in errors.SQLSTATES.values()]
    assert len(classes) == len(set(classes))
    for code, (cls, meaning) in errors.SQLSTATES.items():
        # Standard codes: invalid argument, serialization failure; billingdb's own: class BD.
        assert code in {"22023", "40001"} or code.startswith("BD"), code
        assert cls.sqlstate == code and meaning


def test_translate_maps_a_database_error(conn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT public.link_stripe_customer('u', 'bad')")
    mapped = errors.translate(info.value)
    assert isinstance(mapped, errors.InvalidArgument)
    assert mapped.sqlstate == "22023"
