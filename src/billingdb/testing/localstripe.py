"""localstripe (a stateful Stripe emulator on PyPI, in the test extra) in a child process.

It speaks the 2017 API shape (``plan``, not ``price``), has no Checkout and no prices API, keeps
its objects and events in memory, lists them at ``GET /v1/events``, and sends signed webhooks to the
endpoints registered with ``POST /_config/webhooks/NAME`` (url, secret). ``DELETE /_config/data``
clears it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["running", "register_webhook"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(timeout: float = 20) -> Iterator[str]:
    """Start localstripe on a free port, from scratch and cleared; yields its URL; stops it after."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _send("DELETE", f"{url}/_config/data")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("localstripe did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def register_webhook(url: str, name: str, endpoint: str, secret: str) -> None:
    """Have localstripe send its events, signed with ``secret``, to ``endpoint``."""
    _send("POST", f"{url}/_config/webhooks/{name}", {"url": endpoint, "secret": secret})


def _send(method: str, url: str, form: dict[str, str] | None = None) -> None:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=2):
        pass
