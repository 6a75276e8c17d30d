"""The one exception the bench reports as an error (exit status 1), and running a command whose
failure is one."""

from __future__ import annotations

import subprocess
from pathlib import Path


class BenchError(Exception):
    """Something prevented a measurement: the run stops and exits non-zero."""


def run_command(args: list[str], what: str, timeout: float = 120, env: dict[str, str] | None = None,
                missing: str = "") -> str:
    """Run a command and return its output; a missing program (``missing``: how to get it), a timeout or
    a non-zero exit is a BenchError naming ``what``, with the end of the command's output."""
    program = Path(args[0]).name
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise BenchError(f"{what}: {args[0]} not found{missing}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: {program} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise BenchError(f"{what}: {program} exited with status {done.returncode}:\n{tail}")
    return done.stdout
