"""billingdb: Stripe subscriptions and prepaid credits inside PostgreSQL.

The logic lives in versioned PL/pgSQL (``sql/``) applied by Alembic
(``migrations/``); this package is the thin layer that chooses a database,
runs the migrations and calls the SQL functions.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
