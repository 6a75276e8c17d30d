"""The application API benchmark: ``GET /stripe/subscription/state`` through ``billingdb serve``.

For each run, ``billingdb serve`` starts as a child process on a free port of
127.0.0.1 against the bench database, with an RSA key pair made for the run:
its public key is the service's ``BILLINGDB_JWT_PUBLIC_KEY`` and tokens for the
seeded users are signed with the private one before the clock starts. Then
``clients`` threads (standard library ``http.client``, one keep-alive
connection each) read states in a closed loop for the run's seconds, each
request for a random seeded user with that user's bearer token, so every
request is verified (RS256) and reads ``get_user_subscription_state``.

Reported: requests/s answered 200, the mean latency, and p50/p99 in ``extra``,
judged against the seed's target (API endpoint latency < 200 ms, at p99).

Bounded: the loop stops at the run's end, a request times out after
``REQUEST_TIMEOUT`` seconds, and the child is terminated (killed if it does
not stop) however the run ends.
"""

from __future__ import annotations

import http.client
import math
import random
import secrets
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.service import get, serve, tail
from bench.pgbench import Measurement
from bench.server import log

if TYPE_CHECKING:
    from bench.benchmarks import Benchmark, Context

__all__ = ["measure_state_reads", "API_TARGET_MS"]

API_TARGET_MS = 200.0  # the seed: API endpoint latency < 200 ms
REQUEST_TIMEOUT = 10.0
TOKENS = 500  # distinct users whose tokens are signed before a run
ISSUER = "https://bench.billingdb.invalid"
AUDIENCE = "billingdb-bench"
PATH = "/stripe/subscription/state"


def _keys() -> tuple[bytes, str]:
    """A fresh RSA key pair: (private PEM, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def _serve(database_url: str, public_pem: str):  # type: ignore[no-untyped-def]
    """``billingdb serve`` with the application API on (see bench.service.serve)."""
    return serve({
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": f"whsec_bench_{secrets.token_hex(16)}",
        "BILLINGDB_JWT_PUBLIC_KEY": public_pem,
        "BILLINGDB_JWT_ISSUER": ISSUER,
        "BILLINGDB_JWT_AUDIENCE": AUDIENCE,
    }, unset=("BILLINGDB_JWT_JWKS_URL",))


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _measure(ctx: Context, clients: int, seconds: float, user_prefix: str) -> Measurement:
    import jwt

    private_pem, public_pem = _keys()
    now = int(time.time())
    users = min(ctx.options.users, TOKENS)
    tokens = [
        jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": f"{user_prefix}{uid}", "iat": now,
                    "exp": now + int(seconds) + 600}, private_pem, algorithm="RS256")
        for uid in range(1, users + 1)
    ]
    with _serve(ctx.urls["billingdb"], public_pem) as (port, output):
        # Warm the pool and check one authenticated read before the clock starts.
        status = get(port, PATH, {"Authorization": f"Bearer {tokens[0]}"})
        if status != 200:
            raise BenchError(f"GET {PATH} answered {status}:\n{tail(output)}")
        latencies: list[list[float]] = [[] for _ in range(clients)]
        errors: Counter[str] = Counter()
        lock = threading.Lock()
        start = time.monotonic()
        stop_at = start + seconds

        def reader(c: int) -> None:
            rng = random.Random(c)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
            try:
                while time.monotonic() < stop_at:
                    headers = {"Authorization": f"Bearer {tokens[rng.randrange(users)]}"}
                    sent = time.monotonic()
                    try:
                        conn.request("GET", PATH, headers=headers)
                        response = conn.getresponse()
                        response.read()
                    except (OSError, http.client.HTTPException) as exc:
                        with lock:
                            errors[type(exc).__name__] += 1
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
                        continue
                    if response.status == 200:
                        latencies[c].append((time.monotonic() - sent) * 1000)
                    else:
                        with lock:
                            errors[f"HTTP {response.status}"] += 1
            finally:
                conn.close()

        threads = [threading.Thread(target=reader, args=(c,), daemon=True) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + REQUEST_TIMEOUT + 5)
        elapsed = time.monotonic() - start
        if errors:
            summary = "; ".join(f"{n} x {e}" for e, n in errors.most_common(5))
            raise BenchError(f"GET {PATH}: {sum(errors.values())} requests failed: {summary}\n{tail(output)}")
    done = [v for per in latencies for v in per]
    if not done:
        raise BenchError(f"GET {PATH}: no request finished in {seconds:g} s")
    p99 = _percentile(done, 99)
    extra: dict[str, Any] = {
        "p50_ms": round(_percentile(done, 50), 1),
        "p99_ms": round(p99, 1),
        "api_p99<200ms": "pass" if p99 < API_TARGET_MS else "miss",
    }
    log(f"  HTTP: {len(done)} state reads, p50 {extra['p50_ms']} ms, p99 {extra['p99_ms']} ms, "
        f"max {max(done):.1f} ms")
    return Measurement(tps=len(done) / elapsed, transactions=len(done),
                       latency_ms=round(statistics.fmean(done), 3), extra=extra)


def measure_state_reads(user_prefix: str) -> Callable[[Context, Benchmark, int, float], Measurement]:
    """A Benchmark ``measure``: authenticated state reads from ``clients`` threads for the run's seconds."""

    def measure(ctx: Context, bench: Benchmark, clients: int, seconds: float) -> Measurement:
        return _measure(ctx, clients, seconds, user_prefix)

    return measure
