"""Fixtures for the webhook tests: a database at head with the seed's three plans."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from events.event_helpers import setup_plans


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """An autocommit connection to a fresh database at head, with the seed's plans."""
    setup_plans(conn)
    return conn
