"""``billingdb serve`` in a child process on a free local port, for ``make demo`` and ``make bench``."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, NamedTuple

__all__ = ["Served", "ServeDidNotStart", "serve", "get", "STARTUP_TIMEOUT"]

STARTUP_TIMEOUT = 30.0  # seconds for billingdb serve to answer /healthz


class ServeDidNotStart(RuntimeError):
    """The child exited, or /healthz did not answer 200 within STARTUP_TIMEOUT."""


class Served(NamedTuple):
    port: int
    pid: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if its parent dies without terminating it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


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
def serve(env_overrides: dict[str, str], *, args: tuple[str, ...] = (), unset: tuple[str, ...] = (),
          output: IO[bytes] | None = None) -> Iterator[Served]:
    """``billingdb serve [args]`` on 127.0.0.1: yields (port, pid) once /healthz answers 200; always stopped.

    ``output``: a file for the child's stdout and stderr (default: this process's own).
    Secrets go through the environment, not the command line (ps shows that).
    """
    port = _free_port()
    env = {**os.environ, **env_overrides}
    for name in unset:
        env.pop(name, None)
    command = [sys.executable, "-m", "billingdb", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", *args]
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=output,
                            stderr=subprocess.STDOUT if output is not None else None,
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
                raise ServeDidNotStart(f"billingdb serve did not start (exit status {proc.poll()})")
            time.sleep(0.1)
        yield Served(port, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
