"""``billingdb serve --workers N``: N worker processes on one port, each built from the settings the
command resolved (here: the webhook secret and the database from the environment)."""

from __future__ import annotations

import http.client
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from events.event_helpers import setup_plans, world_state

from billingdb import service
from billingdb.testing import child
from billingdb.testing.stripe import SECRET, StripeWorld, encode, sign


def _workers(pid: int) -> list[int]:
    """The worker processes uvicorn's supervisor ``pid`` started (multiprocessing's spawn)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(proc.name))
    return found


def _post(port: int, event: dict[str, Any]) -> int:
    body = encode(event)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", service.WEBHOOK_PATH, body=body,
                     headers={"stripe-signature": sign(body), "content-type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to count the worker processes")
def test_two_workers_serve_the_webhook(conn: psycopg.Connection[Any], database_url: str) -> None:
    setup_plans(conn)
    world = StripeWorld(user_in_metadata=True)
    with tempfile.TemporaryFile() as output:
        with child.serve({"DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": SECRET},
                         args=("--workers", "2"), output=output) as served:
            assert len(_workers(served.pid)) == 2
            assert [_post(served.port, e) for e in world.new_subscription()] == [200] * 5
        output.seek(0)
        assert "workers: 2" in output.read().decode()
    assert world_state(conn, world.user_id, world.customer_id)["balance"] == 30


def test_bad_workers_from_the_environment_is_one_line(database_url: str) -> None:
    with tempfile.TemporaryFile() as output:
        with pytest.raises(child.ServeDidNotStart):
            with child.serve({"DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": SECRET,
                              "BILLINGDB_WORKERS": "many"}, output=output):
                pass
        output.seek(0)
        text = output.read().decode().strip()
    assert text.splitlines() == [
        "error: BILLINGDB_WORKERS='many': give a number of worker processes from 1 to 64"], text
