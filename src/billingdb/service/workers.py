"""``billingdb serve --workers N``: the same app in N processes sharing one listening socket.

uvicorn's supervisor starts each worker in a fresh interpreter and builds its app by calling
:func:`app_from_environment`, which reads the settings ``billingdb serve`` resolved (flags, then
environment) from one environment variable the supervisor hands down, so that every worker runs
exactly what the command line said. Each worker has its own connection pool (``--pool-size``) and
its own in-flight bound (``--max-in-flight``); a background Events API sync, when on, runs in each
but never two at once (the sync's advisory lock).
"""

from __future__ import annotations

import base64
import os
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from billingdb.errors import ConfigurationError
from billingdb.service.app import ServiceSettings, create_app

if TYPE_CHECKING:
    from billingdb.service.api import ApiSettings

__all__ = ["serve_workers", "app_from_environment", "SETTINGS_VARIABLE"]

#: Set by billingdb serve for its own workers only: the resolved settings, pickled.
SETTINGS_VARIABLE = "BILLINGDB_SERVE_WORKER_SETTINGS"


def serve_workers(settings: ServiceSettings, api_settings: ApiSettings | None, *, workers: int, host: str,
                  port: int, **uvicorn_options: Any) -> None:
    """Run ``workers`` uvicorn worker processes until interrupted."""
    import uvicorn

    os.environ[SETTINGS_VARIABLE] = base64.b64encode(pickle.dumps((settings, api_settings))).decode()
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, host=host, port=port,
                **uvicorn_options)


def app_from_environment() -> Starlette:
    """A worker's app, from the settings its supervisor resolved."""
    from billingdb.service import api

    encoded = os.environ.get(SETTINGS_VARIABLE)
    if not encoded:
        raise ConfigurationError(f"{SETTINGS_VARIABLE} is not set: start workers with billingdb serve --workers N")
    settings, api_settings = pickle.loads(base64.b64decode(encoded))  # noqa: S301 (set by our own parent)
    routes: Sequence[Any] = api.routes(api_settings) if api_settings is not None else ()
    return create_app(settings, routes)
