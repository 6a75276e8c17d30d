"""``billingdb serve`` as a child process for the HTTP benchmarks (webhook intake, application API)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from bench.errors import BenchError

__all__ = ["serve", "get", "tail", "STARTUP_TIMEOUT"]

STARTUP_TIMEOUT = 30.0  # seconds for billingdb serve to answer /healthz


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if the bench process dies without terminating it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def tail(stream: IO[bytes], lines: int = 15) -> str:
    """The last lines the child printed."""
    stream.seek(0)
    text = stream.read().decode("utf-8", "replace").strip()
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """Status of one GET on 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@contextmanager
def serve(env_overrides: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[tuple[int, IO[bytes]]]:
    """``billingdb serve`` on 127.0.0.1: yields (port, its output) once /healthz answers 200; always stopped.

    Secrets and the database URL go through the environment, not the command line (ps shows that).
    """
    port = _free_port()
    env = {**os.environ, **env_overrides}
    for name in unset:
        env.pop(name, None)
    command = [sys.executable, "-m", "billingdb", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                try:
                    if get(port, "/healthz") == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"billingdb serve did not start (exit status {proc.poll()}):\n{tail(output)}")
                time.sleep(0.1)
            yield port, output
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
