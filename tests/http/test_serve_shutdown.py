"""Stopping ``billingdb serve``: SIGTERM or SIGINT is a graceful stop that exits 0, with one process or
``--workers N``, and ends within ``--graceful-timeout`` even while a client is still sending a body."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from billingdb import service
from billingdb.errors import ConfigurationError
from billingdb.testing import child
from billingdb.testing.stripe import SECRET

MARGIN = 10.0  # seconds past --graceful-timeout for the processes to exit on a shared, busy machine


@contextmanager
def _started(database_url: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``billingdb serve [args]`` in a child, once /healthz answers; killed if a test leaves it running."""
    port = child._free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": SECRET}
    env.pop("BILLINGDB_GRACEFUL_TIMEOUT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "billingdb", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", *args],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a stray process of this test can be killed with its group
    )
    try:
        deadline = time.monotonic() + child.STARTUP_TIMEOUT
        while True:
            try:
                if child.get(port, "/healthz") == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, f"serve did not start ({proc.poll()})"
            time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_graceful_stop_exits_0(database_url: str, workers: str, sig: signal.Signals) -> None:
    """--workers 1 exited 143 on SIGTERM (uvicorn raises the signal again after its graceful stop)."""
    with _started(database_url, "--workers", workers) as (proc, _port):
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_slow_body_does_not_hold_the_stop_past_the_graceful_timeout(database_url: str, workers: str) -> None:
    """Shutdown waited for ever for a client sending its body slowly."""
    with _started(database_url, "--workers", workers, "--graceful-timeout", "2") as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(f"POST {service.WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Content-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\n"
                         "Content-Length: 1000\r\n\r\n{\"id\": \"evt_".encode())
            time.sleep(1)  # the request is in the app, reading its body
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=2 + MARGIN)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {2 + MARGIN:.0f} s after SIGTERM with --graceful-timeout 2")
        assert time.monotonic() - started < 2 + MARGIN
        assert code == 0


def test_the_graceful_timeout_comes_from_the_environment(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from billingdb.cli import app

    given: list[dict[str, object]] = []
    monkeypatch.setattr(service, "serve", lambda settings, **options: given.append(options))
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    run = ["serve", "--workers", "1", "--database-url", database_url]
    assert CliRunner().invoke(app, run).exit_code == 0
    monkeypatch.setenv("BILLINGDB_GRACEFUL_TIMEOUT", "7")
    assert CliRunner().invoke(app, run).exit_code == 0
    assert CliRunner().invoke(app, [*run, "--graceful-timeout", "3"]).exit_code == 0
    assert [g["timeout_graceful_shutdown"] for g in given] == [25, 7, 3]
    monkeypatch.setenv("BILLINGDB_GRACEFUL_TIMEOUT", "0")
    refused = CliRunner().invoke(app, run)
    assert isinstance(refused.exception, ConfigurationError) and len(given) == 3
    assert str(refused.exception) == "BILLINGDB_GRACEFUL_TIMEOUT='0': give a number of seconds, at least 1"
