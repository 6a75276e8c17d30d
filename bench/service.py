"""``billingdb serve`` as a child process for the HTTP benchmarks (webhook intake, application API).

The child process itself is billingdb.child_service's (make demo uses it too); here its output
goes to a file, shown when something fails.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from billingdb.testing.child import ServeDidNotStart, get
from billingdb.testing.child import serve as serve_child

from bench.errors import BenchError

__all__ = ["serve", "get", "tail"]


def tail(stream: IO[bytes], lines: int = 15) -> str:
    """The last lines the child printed."""
    stream.seek(0)
    text = stream.read().decode("utf-8", "replace").strip()
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


@contextmanager
def serve(env_overrides: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[tuple[int, IO[bytes]]]:
    """``billingdb serve`` on 127.0.0.1: yields (port, its output) once /healthz answers 200; always stopped.

    Secrets and the database URL go through the environment, not the command line (ps shows that).
    """
    with tempfile.TemporaryFile() as output:
        try:
            with serve_child(env_overrides, unset=unset, output=output) as served:
                yield served.port, output
        except ServeDidNotStart as exc:
            raise BenchError(f"{exc}:\n{tail(output)}") from exc
