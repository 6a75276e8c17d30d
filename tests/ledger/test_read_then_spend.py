"""A transaction that reads the state (cache miss) and then spends must not deadlock against its twin."""

from __future__ import annotations

import threading


def test_concurrent_read_then_spend_of_one_user_does_not_deadlock(conn, connect) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SELECT public.set_plan('price_t', 'Team', 200)")
    conn.execute("SELECT public.link_stripe_customer('u1', 'cus_u1')")
    conn.execute(
        "SELECT public.apply_subscription_change('sub_u1', 'u1', 'cus_u1', 'active', 'price_t', now(), "
        "now() + interval '30 days', false, NULL)"
    )
    conn.execute("SELECT public.grant_credits('u1', 100, 'start')")
    errors: list[BaseException] = []
    for _round in range(5):
        conn.execute("SELECT public.clear_all_subscription_cache()")
        workers = [connect(autocommit=False) for _ in range(2)]
        barrier = threading.Barrier(2, timeout=30)

        def read_then_spend(c) -> None:  # type: ignore[no-untyped-def]
            try:
                barrier.wait()
                c.execute("SELECT public.get_user_subscription_state('u1')")
                barrier.wait()  # both have read (one of them missed and stored) before either spends
                c.execute("SELECT public.use_credits_validated('u1', 1, 'story')")
                c.commit()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                c.rollback()

        threads = [threading.Thread(target=read_then_spend, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for w in workers:
            w.close()
    assert [getattr(e, "sqlstate", repr(e)) for e in errors] == []
    balance = conn.execute("SELECT balance FROM billingdb.credit_balances WHERE user_id = 'u1'").fetchone()
    assert balance["balance"] == 90
