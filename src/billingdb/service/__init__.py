"""The HTTP shell: ``billingdb serve``'s Starlette app around the core library.

- :mod:`billingdb.service.app`: the app, ``POST /stripe/webhook`` and ``GET /healthz``;
- :mod:`billingdb.service.api`: the application routes and their OpenAPI document;
- :mod:`billingdb.service.auth`: the bearer-token (JWT) check;
- :mod:`billingdb.service.checkout`: Stripe Checkout sessions;
- :mod:`billingdb.service.generation`: credit-gated work behind a credit hold.
"""

from __future__ import annotations

from billingdb.service.app import WEBHOOK_PATH, ServiceSettings, create_app, serve

__all__ = ["ServiceSettings", "create_app", "serve", "WEBHOOK_PATH"]
