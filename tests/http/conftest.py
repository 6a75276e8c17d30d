"""Fixtures of the application API tests (test_api_*.py); the webhook tests define their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from api_support import (
    KeyPair,
    StripeStandIn,
    api_settings,
    auth_config,
    make_app,
    setup_plans,
)
from starlette.testclient import TestClient


@pytest.fixture(scope="session")
def signing_key() -> KeyPair:
    return KeyPair.generate("kid-main")


@pytest.fixture(scope="session")
def other_key() -> KeyPair:
    """A key the API does not trust."""
    return KeyPair.generate("kid-other")


@pytest.fixture
def stripe_api() -> Iterator[StripeStandIn]:
    with StripeStandIn() as standin:
        yield standin


@pytest.fixture
def api_db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test database with two plans: PRICE (active) and RETIRED_PRICE (inactive)."""
    setup_plans(conn)
    return conn


@pytest.fixture
def api_client(database_url: str, api_db: psycopg.Connection[Any], signing_key: KeyPair,
               stripe_api: StripeStandIn) -> Iterator[TestClient]:
    app = make_app(database_url, api_settings(auth_config(signing_key), stripe_api.url))
    with TestClient(app) as client:
        yield client
