"""Test payload builders: Stripe events in both API shapes, signed with the stripe library.

The builders live in :mod:`billingdb.stripe_samples` (the demo and the
benchmarks use them too); this module is the tests' name for them.
"""

from __future__ import annotations

from billingdb.testing.stripe import (
    BASIL,
    DAY,
    MONTH,
    PRE_BASIL,
    SECRET,
    SHAPES,
    StripeWorld,
    encode,
    fixture,
    is_basil,
    price_object,
    sign,
    stripe_id,
)

__all__ = [
    "BASIL",
    "DAY",
    "MONTH",
    "PRE_BASIL",
    "SECRET",
    "SHAPES",
    "StripeWorld",
    "encode",
    "fixture",
    "is_basil",
    "price_object",
    "sign",
    "stripe_id",
]
