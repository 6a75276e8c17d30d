"""Schemathesis against /openapi.json: generated requests find no 5xx and no response that breaks the schema.

The service runs under uvicorn on 127.0.0.1 with the Stripe stand-in, a plan and
a funded subscriber; each operation gets a bounded number of generated requests
(positive and negative data), with the subscriber's bearer token. The checks:
no server error, status codes and content types documented, bodies and headers
valid against their schemas, invalid data rejected, and auth not ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from api_support import (
    PRICE,
    USER,
    api_settings,
    auth_config,
    make_app,
    make_subscriber,
    uvicorn_server,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.specs.openapi import checks as openapi_checks

from billingdb.service import api

MAX_EXAMPLES = 15

CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.ignored_auth,
]


@pytest.fixture
def served(database_url, api_db, signing_key, stripe_api) -> Iterator[str]:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=1000, link_customer=False)
    app = make_app(database_url, api_settings(auth_config(signing_key), stripe_api.url))
    with uvicorn_server(app) as base_url:
        yield base_url


def test_openapi_document_is_served_and_valid(served) -> None:  # type: ignore[no-untyped-def]
    doc = requests.get(f"{served}/openapi.json", timeout=10).json()
    assert doc == api.OPENAPI
    assert set(doc["paths"]) == {"/stripe/checkout/session", "/stripe/subscription/state",
                                 "/stories/generate-with-credits"}
    schema = schemathesis.openapi.from_dict(doc)
    assert len([r.ok() for r in schema.get_all_operations()]) == 3


def _real_plan(drawn: tuple[Any, bool]) -> Any:
    """Half the positive checkout cases ask for the plan that exists, with https URLs, so they reach Stripe."""
    case, use_plan = drawn
    if use_plan and isinstance(case.body, dict) and case.meta.generation.mode == GenerationMode.POSITIVE:
        case.body = {**case.body, "price_id": PRICE, "success_url": "https://app.test/ok",
                     "cancel_url": "https://app.test/cancel"}
    return case


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_schemathesis_finds_nothing(served, signing_key, stripe_api, mode) -> None:  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json")
    session = requests.Session()
    auth = signing_key.bearer(USER)
    seen: dict[str, set[int]] = {}

    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy(generation_mode=mode)
        if operation.label == "POST /stripe/checkout/session":
            strategy = st.tuples(strategy, st.booleans()).map(_real_plan)

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(base_url=served, session=session, headers=auth)
            case.validate_response(response, checks=CHECKS, headers=auth)
            seen.setdefault(operation.label, set()).add(response.status_code)

        run()

    if mode == GenerationMode.POSITIVE:
        # The generated requests reached the handlers, not only the validation.
        assert 200 in seen["GET /stripe/subscription/state"], seen
        assert 200 in seen["POST /stripe/checkout/session"] and stripe_api.requests, seen
        assert 200 in seen["POST /stories/generate-with-credits"], seen
    else:
        assert seen["POST /stories/generate-with-credits"] & {400}, seen
