"""BillingClient's credit hold wrappers: typed results, refusals as values, errors as billingdb exceptions."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from helpers import customer, fund, subscribe

from billingdb import errors
from billingdb.client import BillingClient, CreditHold


@pytest.fixture
def billing(conn) -> BillingClient:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 10)
    return BillingClient(conn)


def test_reserve_commit_release_and_sweep(billing: BillingClient) -> None:
    held = billing.reserve_credits("u1", 3, idempotency_key="k1", description="story", metadata={"a": 1})
    assert isinstance(held, CreditHold) and held.success and held.status == "held"
    assert held.hold_id is not None and held.balance == 7 and held.metadata == {"a": 1}
    assert billing.reserve_credits("u1", 3, idempotency_key="k1").replayed is True

    done = billing.commit_credit_hold(held.hold_id, {"story": "x"})
    assert done.status == "committed" and done.result == {"story": "x"} and done.transaction_id is not None
    assert billing.commit_credit_hold(held.hold_id).duplicate is True

    other = billing.reserve_credits("u1", 2)
    back = billing.release_credit_hold(other.hold_id, "failed")  # type: ignore[arg-type]
    assert back.status == "released" and back.reason == "failed" and back.balance == 7

    short = billing.reserve_credits("u1", 1, timedelta(milliseconds=50))
    time.sleep(0.1)
    assert billing.release_expired_credit_holds() == 1
    assert billing.credit_balance("u1") == 7

    listed = billing.credit_holds("u1")
    assert [h.hold_id for h in listed] == [short.hold_id, other.hold_id, held.hold_id]
    assert [h.status for h in listed] == ["expired", "released", "committed"]


def test_refusals_are_values(billing: BillingClient) -> None:
    refused = billing.reserve_credits("u1", 11)
    assert refused.success is False and refused.code == "insufficient_credits" and refused.hold_id is None
    assert billing.reserve_credits("nobody", 1).code == "no_subscription"


def test_errors_are_billingdb_exceptions(billing: BillingClient) -> None:
    with pytest.raises(errors.InvalidArgument):
        billing.reserve_credits("u1", 0)
    with pytest.raises(errors.InvalidArgument):
        billing.release_expired_credit_holds(0)
    with pytest.raises(errors.UnknownCreditHold):
        billing.commit_credit_hold(123456)
    held = billing.reserve_credits("u1", 1, idempotency_key="k")
    with pytest.raises(errors.IdempotencyConflict):
        billing.reserve_credits("u1", 2, idempotency_key="k")
    billing.release_credit_hold(held.hold_id)  # type: ignore[arg-type]
    with pytest.raises(errors.CreditHoldSettled) as info:
        billing.commit_credit_hold(held.hold_id)  # type: ignore[arg-type]
    assert info.value.sqlstate == "BD071" and info.value.hint
