"""billingdb.client: one typed wrapper per SQL function; refusals are values, errors are exceptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billingdb import errors
from billingdb.client import BillingClient, CreditUse, SubscriptionState


@pytest.fixture
def billing(conn) -> BillingClient:  # type: ignore[no-untyped-def]
    return BillingClient(conn)


def _subscribe(billing: BillingClient, user: str = "u1", status: str = "active") -> None:
    now = datetime.now(UTC)
    billing.set_plan("price_team", "Team", 200)
    billing.link_stripe_customer(user, f"cus_{user}")
    change = billing.apply_subscription_change(
        f"sub_{user}", user_id=user, customer_id=f"cus_{user}", status=status, price_id="price_team",
        current_period_start=now, current_period_end=now + timedelta(days=30),
    )
    assert change.applied and change.result == "created"


def test_full_flow_through_the_wrappers(billing: BillingClient) -> None:
    _subscribe(billing)
    allocation = billing.add_subscription_credits("cus_u1", "in_1", "sub_u1", 200, "first invoice")
    assert allocation.success and allocation.credits == 200 and allocation.balance == 200
    assert billing.add_subscription_credits("cus_u1", "in_1", "sub_u1", 200).duplicate is True

    used = billing.use_credits_validated("u1", 3, "story", metadata={"story": 1}, idempotency_key="req-1")
    assert isinstance(used, CreditUse) and used.success and used.balance == 197
    again = billing.use_credits_validated("u1", 3, "story", metadata={"story": 1}, idempotency_key="req-1")
    assert again.replayed and again.transaction_id == used.transaction_id
    assert billing.credit_balance("u1") == 197

    refund = billing.refund_credits(used.transaction_id, "generation failed")  # type: ignore[arg-type]
    assert refund.success and refund.balance == 200
    assert billing.refund_credits(used.transaction_id, "again").duplicate is True  # type: ignore[arg-type]

    state = billing.get_user_subscription_state("u1")
    assert isinstance(state, SubscriptionState)
    assert (state.status, state.plan, state.credits_balance, state.can_use_credits) == ("active", "Team", 200, True)
    assert billing.get_user_subscription_state("u1").cached is True

    history = billing.credit_history("u1")
    assert [e.transaction_type for e in history] == ["refund", "usage", "allocation"]
    assert [p.price_id for p in billing.list_plans()] == ["price_team"]
    status = billing.get_subscription_cache_status()
    assert status.total == 1 and status.hits >= 1
    assert billing.clear_all_subscription_cache() == 1


def test_refusal_is_a_value(billing: BillingClient) -> None:
    _subscribe(billing)
    refused = billing.use_credits_validated("u1", 1)
    assert refused.success is False and refused.code == "insufficient_credits"
    nobody = billing.use_credits_validated("nobody", 1)
    assert nobody.success is False and nobody.code == "no_subscription"


@pytest.mark.parametrize(
    ("call", "exception"),
    [
        (lambda b: b.use_credits_validated("u1", 0), errors.InvalidArgument),
        (lambda b: b.use_credits_validated("", 1), errors.InvalidArgument),
        (lambda b: b.grant_credits("u1", 0, "zero"), errors.InvalidArgument),
        (lambda b: b.add_subscription_credits("cus_unknown", "in_9", "sub_9", 30), errors.UnknownCustomer),
        (lambda b: b.link_stripe_customer("u2", "cus_u1"), errors.CustomerConflict),
    ],
)
def test_errors_are_exceptions_named_after_their_meaning(billing: BillingClient, call, exception) -> None:  # type: ignore[no-untyped-def]
    _subscribe(billing)
    with pytest.raises(exception) as info:
        call(billing)
    assert info.value.sqlstate == exception.sqlstate
